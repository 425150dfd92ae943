//! One record of a segment file as bytes: no I/O.
//!
//! ```text
//! +-------------+-------------+--------------+--------------+-------------------------+
//! | len   u32le | crc   u32le | index  u64le | term   u64le | payload (len - 16 bytes) |
//! +-------------+-------------+--------------+--------------+-------------------------+
//!  `len` counts index, term and payload; `crc` is CRC32C over those same `len` bytes.
//! ```
//!
//! A segment is records back to back. Segments are preallocated with zeros, so a `len` of 0 where
//! a record would start marks the end of the data ([`Decoded::End`]); no valid record has one.
//! Decoding never panics and never trusts a length it has not checked against
//! [`MAX_PAYLOAD_BYTES`] and the bytes at hand.

/// Bytes before the payload: len, crc, index, term.
pub const HEADER_BYTES: usize = 24;

/// Bytes of `len` and `crc`, which the CRC does not cover.
const PREFIX_BYTES: usize = 8;

/// Bytes of index and term, counted by `len` and covered by the CRC.
const ID_BYTES: usize = 16;

/// The largest payload one record may carry: bounds what a corrupt `len` can make a reader
/// allocate or skip. Entries are far smaller (the broker caps a proposal at a few MiB).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// The log index and term a record carries in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordId {
    pub index: u64,
    pub term: u64,
}

/// What the bytes at a record position hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole record whose CRC matches; `size` is its length on disk, header included.
    Record {
        id: RecordId,
        payload: &'a [u8],
        size: usize,
    },
    /// Zeros where a record would start: the end of the data.
    End,
    /// The record continues past the bytes given (read more, or it is torn at the end of a file).
    Incomplete { size: usize },
    /// Not a record: a length out of range, or a CRC that does not match.
    Invalid { reason: InvalidRecord },
}

/// Why bytes are not a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    #[error("record length {len} is out of range (16..={max})", max = MAX_PAYLOAD_BYTES + ID_BYTES)]
    BadLength { len: u64 },
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
}

/// Why a record cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payload of {len} bytes is larger than a record holds ({MAX_PAYLOAD_BYTES} bytes)")]
pub struct PayloadTooLarge {
    pub len: usize,
}

/// The on-disk size of a record with `payload_len` payload bytes.
pub fn record_size(payload_len: usize) -> usize {
    HEADER_BYTES + payload_len
}

/// Appends one record to `out`.
pub fn encode(id: RecordId, payload: &[u8], out: &mut Vec<u8>) -> Result<(), PayloadTooLarge> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadTooLarge { len: payload.len() });
    }
    // Cannot overflow: the payload is at most MAX_PAYLOAD_BYTES.
    let len = (ID_BYTES + payload.len()) as u32;
    let index = id.index.to_le_bytes();
    let term = id.term.to_le_bytes();
    let mut crc = crc32c::crc32c(&index);
    crc = crc32c::crc32c_append(crc, &term);
    crc = crc32c::crc32c_append(crc, payload);
    out.reserve(record_size(payload.len()));
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&index);
    out.extend_from_slice(&term);
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    let Some(prefix) = bytes.get(..PREFIX_BYTES) else {
        // A few trailing bytes: zeros are the end of the data, anything else a torn header.
        return if bytes.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Incomplete { size: HEADER_BYTES }
        };
    };
    let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let stored_crc = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if len == 0 && stored_crc == 0 {
        return Decoded::End;
    }
    let len_bytes = len as usize;
    if !(ID_BYTES..=ID_BYTES + MAX_PAYLOAD_BYTES).contains(&len_bytes) {
        return Decoded::Invalid {
            reason: InvalidRecord::BadLength {
                len: u64::from(len),
            },
        };
    }
    let size = PREFIX_BYTES + len_bytes;
    let Some(body) = bytes.get(PREFIX_BYTES..size) else {
        return Decoded::Incomplete { size };
    };
    let computed = crc32c::crc32c(body);
    if computed != stored_crc {
        return Decoded::Invalid {
            reason: InvalidRecord::BadCrc {
                stored: stored_crc,
                computed,
            },
        };
    }
    let (id_bytes, payload) = body.split_at(ID_BYTES);
    let (index, term) = id_bytes.split_at(8);
    let id = RecordId {
        index: u64::from_le_bytes(index.try_into().unwrap_or([0; 8])),
        term: u64::from_le_bytes(term.try_into().unwrap_or([0; 8])),
    };
    Decoded::Record { id, payload, size }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(index: u64, term: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(RecordId { index, term }, payload, &mut out).unwrap();
        out
    }

    #[test]
    fn byte_layout_is_as_documented() {
        let bytes = encoded(0x0102, 7, b"ab");
        assert_eq!(bytes.len(), 26);
        assert_eq!(&bytes[0..4], &18u32.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[8..]);
        assert_eq!(&bytes[4..8], &crc.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x0102u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &7u64.to_le_bytes());
        assert_eq!(&bytes[24..], b"ab");
    }

    #[test]
    fn round_trip_and_size() {
        let bytes = encoded(42, 3, b"hello");
        match decode(&bytes) {
            Decoded::Record { id, payload, size } => {
                assert_eq!(id, RecordId { index: 42, term: 3 });
                assert_eq!(payload, b"hello");
                assert_eq!(size, bytes.len());
                assert_eq!(size, record_size(5));
            }
            other => panic!("expected a record, got {other:?}"),
        }
    }

    #[test]
    fn zeros_are_the_end_and_every_prefix_is_incomplete() {
        assert_eq!(decode(&[0u8; 64]), Decoded::End);
        assert_eq!(decode(&[]), Decoded::End);
        let bytes = encoded(1, 1, b"payload");
        for cut in 1..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Decoded::Incomplete { .. }),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_detected() {
        let bytes = encoded(9, 2, b"some payload bytes");
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[byte] ^= 1 << bit;
                match decode(&flipped) {
                    Decoded::Record { .. } => panic!("flip of bit {bit} in byte {byte} unnoticed"),
                    Decoded::Invalid { .. } | Decoded::Incomplete { .. } | Decoded::End => {}
                }
            }
        }
    }

    #[test]
    fn lengths_out_of_range_are_invalid() {
        let mut bytes = encoded(1, 1, b"x");
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Decoded::Invalid {
                reason: InvalidRecord::BadLength { .. }
            }
        ));
        bytes[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(decode(&bytes), Decoded::Invalid { .. }));
    }

    #[test]
    fn oversized_payloads_are_refused() {
        let payload = vec![0u8; MAX_PAYLOAD_BYTES + 1];
        let mut out = Vec::new();
        assert_eq!(
            encode(RecordId { index: 1, term: 1 }, &payload, &mut out),
            Err(PayloadTooLarge {
                len: MAX_PAYLOAD_BYTES + 1
            })
        );
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn records_back_to_back_decode_in_order(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..16)
        ) {
            let mut bytes = Vec::new();
            for (i, payload) in payloads.iter().enumerate() {
                encode(RecordId { index: i as u64, term: 1 }, payload, &mut bytes).unwrap();
            }
            let mut pos = 0;
            for (i, payload) in payloads.iter().enumerate() {
                match decode(&bytes[pos..]) {
                    Decoded::Record { id, payload: got, size } => {
                        prop_assert_eq!(id.index, i as u64);
                        prop_assert_eq!(got, payload.as_slice());
                        pos += size;
                    }
                    other => prop_assert!(false, "record {} decoded as {:?}", i, other),
                }
            }
            prop_assert_eq!(decode(&bytes[pos..]), Decoded::End);
        }
    }
}
