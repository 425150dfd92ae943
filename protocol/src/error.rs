//! The one error type of the wire format.

/// Why bytes could not be decoded, or a value could not be encoded.
///
/// "Need more bytes" is not an error: decoders return `Ok(None)` for it.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A frame announces more bytes than [`crate::frame::MAX_FRAME_BYTES`]; nothing was allocated.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: usize },

    /// A length field is negative or does not fit the bytes around it.
    #[error("invalid length for {what}: {len} (available: {available})")]
    BadLength {
        what: &'static str,
        len: i64,
        available: usize,
    },

    /// The serialize-type byte of a frame is neither JSON (0) nor ROCKETMQ (1).
    #[error("unknown serialize type {0} (expected 0 = JSON or 1 = ROCKETMQ)")]
    UnknownSerializeType(u8),

    /// A JSON document (frame header or body) could not be parsed.
    #[error("malformed JSON in {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A string field does not hold valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },

    /// A header field that the request needs is absent.
    #[error("missing header field `{field}`")]
    MissingField { field: &'static str },

    /// A header or body field holds a value that cannot be parsed or is out of range.
    #[error("invalid value {value:?} for field `{field}`: {reason}")]
    InvalidField {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    /// A stored message does not start with a known magic code.
    #[error("unknown message magic code {0:#010x}")]
    BadMagic(u32),

    /// A stored message's body does not match its CRC.
    #[error("message body CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BodyCrcMismatch { stored: u32, computed: u32 },

    /// A value cannot be represented in the wire format (too long, out of range).
    #[error("cannot encode {what}: {reason}")]
    Unencodable {
        what: &'static str,
        reason: &'static str,
    },
}

impl WireError {
    pub(crate) fn bad_length(what: &'static str, len: impl Into<i64>, available: usize) -> Self {
        WireError::BadLength {
            what,
            len: len.into(),
            available,
        }
    }

    pub(crate) fn json(what: &'static str, source: serde_json::Error) -> Self {
        WireError::Json { what, source }
    }
}
