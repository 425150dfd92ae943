//! The one binary encoding of RaftMQ: bincode 2 (serde mode) with a fixed configuration behind a
//! leading format-version byte.
//!
//! Everything the raft crate writes to disk (log entries, vote, snapshots) or sends to a peer
//! (Raft RPCs) goes through [`encode`] and [`decode`]; the broker encodes its entry payloads
//! through them too, so there is exactly one place that decides the byte layout.
//!
//! ```text
//! +---------+------------------------------------------+
//! | version | bincode 2 body (little endian, varints)   |
//! |  1 byte | exactly the rest of the buffer            |
//! +---------+------------------------------------------+
//! ```
//!
//! Decoding is strict: an unknown version, a malformed body, or bytes left over after the body are
//! errors, never panics. Claimed lengths inside the body are checked against
//! [`MAX_DECODE_BYTES`] before anything is allocated for them.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version written in front of every encoded value. Bump it when the layout of any
/// encoded type changes incompatibly, and keep decoding the old one for as long as data in that
/// format may exist.
pub const FORMAT_VERSION: u8 = 1;

/// The most bytes one decode may claim for containers and byte strings. It bounds the memory a
/// hostile or corrupt input can make [`decode`] allocate before it fails.
pub const MAX_DECODE_BYTES: usize = 256 * 1024 * 1024;

/// The fixed bincode configuration: little endian, variable-length integers, and a decode limit.
/// Never change it for an existing [`FORMAT_VERSION`].
fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MAX_DECODE_BYTES>()
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoded input is empty: the format-version byte is missing")]
    Empty,
    #[error("unknown format version {found} (this build reads version {expected})")]
    UnknownVersion { found: u8, expected: u8 },
    #[error("{count} trailing bytes after the encoded value")]
    TrailingBytes { count: usize },
    #[error("malformed encoded value: {0}")]
    Malformed(#[source] bincode::error::DecodeError),
    #[error("value cannot be encoded: {0}")]
    Encode(#[source] bincode::error::EncodeError),
}

/// Encodes `value` as the version byte followed by its bincode body.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `value` (version byte and body) to `out`, so that a caller can reuse
/// one buffer for many values. On error `out` keeps its previous contents.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.push(FORMAT_VERSION);
    if let Err(e) = bincode::serde::encode_into_std_write(value, out, config()) {
        out.truncate(start);
        return Err(CodecError::Encode(e));
    }
    Ok(())
}

/// Decodes a value written by [`encode`]. The whole input must be exactly one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion {
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let (value, used) =
        bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(CodecError::Malformed)?;
    let trailing = body.len().saturating_sub(used);
    if trailing != 0 {
        return Err(CodecError::TrailingBytes { count: trailing });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use bytes::Bytes;
    use serde::Deserialize;

    use super::*;
    use crate::types::{AppRequest, Entry, EntryPayload, Vote};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        name: String,
        body: Bytes,
        tags: Vec<u32>,
        parent: Option<Box<Sample>>,
    }

    fn sample() -> Sample {
        Sample {
            id: 7,
            name: "queue-3".to_string(),
            body: Bytes::from_static(b"hello raft"),
            tags: vec![1, 300, 70_000],
            parent: Some(Box::new(Sample {
                id: u64::MAX,
                name: String::new(),
                body: Bytes::new(),
                tags: vec![],
                parent: None,
            })),
        }
    }

    fn entries() -> Vec<Entry> {
        let log_id = |term, index| crate::types::log_id(term, 1, index);
        vec![
            Entry {
                log_id: log_id(1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(1, 2),
                payload: EntryPayload::Normal(AppRequest(Bytes::from(vec![0xAB; 1024]))),
            },
            Entry {
                log_id: log_id(2, 3),
                payload: EntryPayload::Membership(crate::types::Membership::new_with_defaults(
                    vec![BTreeSet::from([1, 2, 3])],
                    None,
                )),
            },
        ]
    }

    #[test]
    fn round_trips_a_nested_value() {
        let encoded = encode(&sample()).unwrap();
        assert_eq!(encoded[0], FORMAT_VERSION);
        let decoded: Sample = decode(&encoded).unwrap();
        assert_eq!(decoded, sample());
    }

    #[test]
    fn round_trips_raft_entries_and_vote() {
        let encoded = encode(&entries()).unwrap();
        let decoded: Vec<Entry> = decode(&encoded).unwrap();
        assert_eq!(decoded, entries());

        let vote = Vote::new_committed(9, 2);
        let decoded: Vote = decode(&encode(&vote).unwrap()).unwrap();
        assert_eq!(decoded, vote);
    }

    #[test]
    fn bytes_are_encoded_as_one_byte_string() {
        // A 1 KiB payload costs its length prefix and a little framing, not a byte per element
        // plus per-element overhead.
        let payload = AppRequest(Bytes::from(vec![0xCD; 1024]));
        let encoded = encode(&payload).unwrap();
        assert!(encoded.len() <= 1024 + 4, "encoded {} bytes", encoded.len());
    }

    #[test]
    fn encode_into_appends_and_reuses_the_buffer() {
        let mut buf = b"prefix".to_vec();
        encode_into(&42u64, &mut buf).unwrap();
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(decode::<u64>(&buf[6..]).unwrap(), 42);
    }

    #[test]
    fn empty_input_is_rejected() {
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut encoded = encode(&sample()).unwrap();
        encoded[0] = FORMAT_VERSION + 1;
        match decode::<Sample>(&encoded) {
            Err(CodecError::UnknownVersion { found, expected }) => {
                assert_eq!(found, FORMAT_VERSION + 1);
                assert_eq!(expected, FORMAT_VERSION);
            }
            other => panic!("expected UnknownVersion, got {other:?}"),
        }
        encoded[0] = 0;
        assert!(matches!(
            decode::<Sample>(&encoded),
            Err(CodecError::UnknownVersion { found: 0, .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut encoded = encode(&sample()).unwrap();
        encoded.extend_from_slice(&[0, 1, 2]);
        assert!(matches!(
            decode::<Sample>(&encoded),
            Err(CodecError::TrailingBytes { count: 3 })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for encoded in [encode(&sample()).unwrap(), encode(&entries()).unwrap()] {
            for cut in 0..encoded.len() {
                let prefix = &encoded[..cut];
                let sample_result = decode::<Sample>(prefix);
                let entries_result = decode::<Vec<Entry>>(prefix);
                assert!(
                    sample_result.is_err(),
                    "prefix of {cut} bytes decoded as Sample"
                );
                assert!(
                    entries_result.is_err(),
                    "prefix of {cut} bytes decoded as entries"
                );
            }
        }
    }

    #[test]
    fn a_huge_claimed_length_fails_without_allocating_it() {
        // Version byte, then a varint length prefix claiming 2^40 bytes (marker 253 = u64 follows):
        // decoding must stop (at the limit, or at the end of the input it borrows from) rather
        // than try to allocate a terabyte, which would abort the test process.
        const VARINT_U64_MARKER: u8 = 253;
        let mut hostile = vec![FORMAT_VERSION, VARINT_U64_MARKER];
        hostile.extend_from_slice(&(1u64 << 40).to_le_bytes());
        for result in [
            decode::<Bytes>(&hostile).map(|_| ()),
            decode::<Vec<u64>>(&hostile).map(|_| ()),
            decode::<String>(&hostile).map(|_| ()),
        ] {
            assert!(
                matches!(
                    result,
                    Err(CodecError::Malformed(
                        bincode::error::DecodeError::LimitExceeded
                            | bincode::error::DecodeError::UnexpectedEnd { .. }
                    ))
                ),
                "got {result:?}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        for start in 0..64 {
            let mut input = vec![FORMAT_VERSION];
            input.extend_from_slice(&garbage[start..start + 200]);
            // Any result is fine as long as nothing panics; most of these are errors.
            let _ = decode::<Vec<Entry>>(&input);
            let _ = decode::<Sample>(&input);
        }
    }
}
