//! Typed request and response headers, carried as strings in a command's `extFields`.
//!
//! Each header type implements [`ExtHeader`]: `from_ext_fields` names the missing or invalid
//! field in its error, `to_ext_fields` writes the Java field names. Optional fields are
//! `Option`s and are left out when `None`; unknown fields are ignored on decode (clients add
//! their own, such as `bname`, `ns`, `lo`).

use std::collections::BTreeMap;

use crate::error::WireError;

/// A header that lives in `extFields`.
pub trait ExtHeader: Sized {
    /// Parses the header; fails naming the first missing or invalid field.
    fn from_ext_fields(fields: &BTreeMap<String, String>) -> Result<Self, WireError>;

    /// The header as `extFields` entries (Java field names, Java value formats).
    fn to_ext_fields(&self) -> BTreeMap<String, String>;
}

/// A value that can be carried in an extension field, formatted as Java formats it.
pub trait FieldValue: Sized {
    fn parse(field: &'static str, raw: &str) -> Result<Self, WireError>;
    fn render(&self) -> String;
}

impl FieldValue for String {
    fn parse(_field: &'static str, raw: &str) -> Result<Self, WireError> {
        Ok(raw.to_owned())
    }

    fn render(&self) -> String {
        self.clone()
    }
}

macro_rules! integer_field_value {
    ($($ty:ty),*) => {$(
        impl FieldValue for $ty {
            fn parse(field: &'static str, raw: &str) -> Result<Self, WireError> {
                raw.trim().parse::<$ty>().map_err(|_| WireError::InvalidField {
                    field,
                    value: raw.to_owned(),
                    reason: concat!("expected an integer of type ", stringify!($ty)),
                })
            }

            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

integer_field_value!(i32, i64, u64);

impl FieldValue for bool {
    fn parse(field: &'static str, raw: &str) -> Result<Self, WireError> {
        let trimmed = raw.trim();
        if trimmed.eq_ignore_ascii_case("true") {
            Ok(true)
        } else if trimmed.eq_ignore_ascii_case("false") {
            Ok(false)
        } else {
            Err(WireError::InvalidField {
                field,
                value: raw.to_owned(),
                reason: "expected true or false",
            })
        }
    }

    fn render(&self) -> String {
        self.to_string()
    }
}

/// Reads a field the header cannot do without.
pub fn required<T: FieldValue>(
    fields: &BTreeMap<String, String>,
    field: &'static str,
) -> Result<T, WireError> {
    let raw = fields.get(field).ok_or(WireError::MissingField { field })?;
    T::parse(field, raw)
}

/// Reads a field that may be absent.
pub fn optional<T: FieldValue>(
    fields: &BTreeMap<String, String>,
    field: &'static str,
) -> Result<Option<T>, WireError> {
    fields
        .get(field)
        .map(|raw| T::parse(field, raw))
        .transpose()
}

/// Declares a header struct and its [`ExtHeader`] impl from one field list:
/// `required name: Type => "wireName",` or `optional name: Type => "wireName",`.
macro_rules! ext_header {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* $kind:ident $field:ident : $ty:ty => $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: ext_header!(@type $kind $ty), )*
        }

        impl $crate::header::ExtHeader for $name {
            fn from_ext_fields(
                fields: &::std::collections::BTreeMap<String, String>,
            ) -> Result<Self, $crate::error::WireError> {
                let _ = fields;
                Ok(Self { $( $field: ext_header!(@get $kind fields $wire $ty), )* })
            }

            fn to_ext_fields(&self) -> ::std::collections::BTreeMap<String, String> {
                #[allow(unused_mut)]
                let mut fields = ::std::collections::BTreeMap::new();
                $( ext_header!(@put $kind fields $wire self.$field); )*
                fields
            }
        }
    };
    (@type required $ty:ty) => { $ty };
    (@type optional $ty:ty) => { Option<$ty> };
    (@get required $fields:ident $wire:literal $ty:ty) => {
        $crate::header::required::<$ty>($fields, $wire)?
    };
    (@get optional $fields:ident $wire:literal $ty:ty) => {
        $crate::header::optional::<$ty>($fields, $wire)?
    };
    (@put required $fields:ident $wire:literal $value:expr) => {
        $fields.insert($wire.to_owned(), $crate::header::FieldValue::render(&$value));
    };
    (@put optional $fields:ident $wire:literal $value:expr) => {
        if let Some(value) = &$value {
            $fields.insert($wire.to_owned(), $crate::header::FieldValue::render(value));
        }
    };
}

pub mod client;
pub mod namesrv;
pub mod offset;
pub mod pop;
pub mod pull;
pub mod send;
pub mod topic;
pub mod transaction;

pub use client::*;
pub use namesrv::*;
pub use offset::*;
pub use pop::*;
pub use pull::*;
pub use send::*;
pub use topic::*;

#[cfg(test)]
pub(crate) mod test_support {
    use super::ExtHeader;

    /// Encodes, decodes and compares; then checks that dropping each required field fails
    /// with an error naming it.
    pub(crate) fn assert_round_trip<H: ExtHeader + PartialEq + std::fmt::Debug>(
        header: &H,
        required_fields: &[&'static str],
    ) {
        let fields = header.to_ext_fields();
        let decoded = H::from_ext_fields(&fields).expect("decode what we encoded");
        assert_eq!(&decoded, header);
        for field in required_fields {
            let mut partial = fields.clone();
            assert!(partial.remove(*field).is_some(), "{field} was not encoded");
            let error = H::from_ext_fields(&partial).expect_err("missing required field");
            assert!(
                error.to_string().contains(field),
                "error {error} does not name {field}"
            );
        }
    }
}
