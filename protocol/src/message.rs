//! Messages as RocketMQ lays them out: the stored form (what a pull response's body holds, one
//! message after another) and the batch-send form (the body of SEND_BATCH_MESSAGE).
//!
//! Stored message, big-endian:
//!
//! ```text
//! i32 totalSize | u32 magic (V1 0xdaa320a7, V2 0xdaa320ab) | i32 bodyCRC | i32 queueId
//! | i32 flag | i64 queueOffset | i64 physicalOffset | i32 sysFlag | i64 bornTimestamp
//! | bornHost (IPv4: 4 + i32 port; IPv6 when sysFlag has BORNHOST_V6: 16 + i32 port)
//! | i64 storeTimestamp | storeHost (same, by STOREHOST_V6) | i32 reconsumeTimes
//! | i64 preparedTransactionOffset | i32 bodyLength, body
//! | topic length (V1: u8, V2: i16), topic | i16 propertiesLength, properties
//! ```
//!
//! Batch-send element: `i32 totalSize | i32 magic (0) | i32 bodyCRC (0) | i32 flag
//! | i32 bodyLength, body | i16 propertiesLength, properties` (no topic: the header has it).
//!
//! Properties are `name\x01value\x02` repeated ([`properties`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::WireError;
use crate::reader::Reader;

/// Magic code of a stored message whose topic length is one byte.
pub const MAGIC_CODE_V1: u32 = 0xDAA3_20A7;
/// Magic code of a stored message whose topic length is an i16.
pub const MAGIC_CODE_V2: u32 = 0xDAA3_20AB;

/// Topics up to this many bytes are stored as V1: Java reads the V1 topic length as a signed
/// byte, so a longer topic must use V2.
pub const MAX_V1_TOPIC_BYTES: usize = 127;

/// The longest topic a stored message can carry (V2 i16 length).
pub const MAX_TOPIC_BYTES: usize = i16::MAX as usize;

/// The longest properties string (its length is an i16).
pub const MAX_PROPERTIES_BYTES: usize = i16::MAX as usize;

/// Bytes of a batch element without body and properties.
const BATCH_ELEMENT_FIXED_BYTES: usize = 4 + 4 + 4 + 4 + 4 + 2;

/// Bits of a message's `sysFlag` (Java's `MessageSysFlag`).
pub mod sys_flag {
    pub const COMPRESSED: i32 = 0x1;
    pub const MULTI_TAGS: i32 = 0x1 << 1;
    pub const TRANSACTION_NOT_TYPE: i32 = 0;
    pub const TRANSACTION_PREPARED_TYPE: i32 = 0x1 << 2;
    pub const TRANSACTION_COMMIT_TYPE: i32 = 0x2 << 2;
    pub const TRANSACTION_ROLLBACK_TYPE: i32 = 0x3 << 2;
    pub const BORNHOST_V6: i32 = 0x1 << 4;
    pub const STOREHOST_V6: i32 = 0x1 << 5;
    pub const NEED_UNWRAP: i32 = 0x1 << 6;
    pub const INNER_BATCH: i32 = 0x1 << 7;
}

/// Property names (Java's `MessageConst`).
pub mod property {
    pub const KEYS: &str = "KEYS";
    pub const TAGS: &str = "TAGS";
    /// The client-assigned unique id: what clients show as the message id.
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
    pub const WAIT: &str = "WAIT";
    pub const DELAY: &str = "DELAY";
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    pub const REAL_QID: &str = "REAL_QID";
    pub const TRAN_MSG: &str = "TRAN_MSG";
    pub const PRODUCER_GROUP: &str = "PGROUP";
    pub const MIN_OFFSET: &str = "MIN_OFFSET";
    pub const MAX_OFFSET: &str = "MAX_OFFSET";
    pub const BUYER_ID: &str = "BUYER_ID";
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    /// A popped message's extra info (receipt handle), set by the consumer from the pop answer.
    pub const POP_CK: &str = "POP_CK";
    pub const TRANSFER_FLAG: &str = "TRANSFER_FLAG";
    pub const CORRECTION_FLAG: &str = "CORRECTION_FLAG";
    pub const MQ2_FLAG: &str = "MQ2_FLAG";
    pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
    pub const MSG_REGION: &str = "MSG_REGION";
    pub const TRACE_SWITCH: &str = "TRACE_ON";
    pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
    pub const CONSUME_START_TIMESTAMP: &str = "CONSUME_START_TIME";
    pub const TRANSACTION_PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
    pub const TRANSACTION_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
    pub const CHECK_IMMUNITY_TIME_IN_SECONDS: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    pub const INSTANCE_ID: &str = "INSTANCE_ID";
    pub const CORRELATION_ID: &str = "CORRELATION_ID";
    pub const MESSAGE_TYPE: &str = "MSG_TYPE";
    pub const DLQ_ORIGIN_TOPIC: &str = "DLQ_ORIGIN_TOPIC";
    pub const DLQ_ORIGIN_MESSAGE_ID: &str = "DLQ_ORIGIN_MESSAGE_ID";
    pub const SHARDING_KEY: &str = "__SHARDINGKEY";
    pub const TRANSACTION_ID: &str = "__transactionId__";
    pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
    pub const TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
    pub const TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
    /// The absolute due time (ms) the broker gives a timer message while it waits.
    pub const TIMER_OUT_MS: &str = "TIMER_OUT_MS";
    /// When the broker moved a timer message to its real topic (ms).
    pub const TIMER_DEQUEUE_MS: &str = "TIMER_DEQUEUE_MS";
}

/// What separates the keys of one message in its `KEYS` property (Java's `KEY_SEPARATOR`).
pub const KEY_SEPARATOR: char = ' ';

/// The `name\x01value\x02` properties string.
pub mod properties {
    use std::collections::BTreeMap;

    use crate::error::WireError;

    pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
    pub const PROPERTY_SEPARATOR: char = '\u{2}';

    /// Parses a properties string as Java does: entries without a separator or with an empty
    /// name are skipped; a repeated name keeps its last value.
    pub fn parse(text: &str) -> BTreeMap<String, String> {
        text.split(PROPERTY_SEPARATOR)
            .filter_map(|entry| {
                let (name, value) = entry.split_once(NAME_VALUE_SEPARATOR)?;
                (!name.is_empty()).then(|| (name.to_owned(), value.to_owned()))
            })
            .collect()
    }

    /// The value of one property in a properties string, without parsing the rest (the last
    /// value wins when a name repeats, as in [`parse`]).
    pub fn find<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.rsplit(PROPERTY_SEPARATOR)
            .filter_map(|entry| entry.split_once(NAME_VALUE_SEPARATOR))
            .find(|(entry_name, _)| *entry_name == name)
            .map(|(_, value)| value)
    }

    /// Renders properties; names must be non-empty and neither names nor values may contain
    /// the separators.
    pub fn render(properties: &BTreeMap<String, String>) -> Result<String, WireError> {
        let mut out = String::new();
        for (name, value) in properties {
            let bad = |text: &str| text.contains([NAME_VALUE_SEPARATOR, PROPERTY_SEPARATOR]);
            if name.is_empty() || bad(name) || bad(value) {
                return Err(WireError::InvalidField {
                    field: "properties",
                    value: name.clone(),
                    reason: "property names must be non-empty, and names and values free of \\x01 and \\x02",
                });
            }
            out.push_str(name);
            out.push(NAME_VALUE_SEPARATOR);
            out.push_str(value);
            out.push(PROPERTY_SEPARATOR);
        }
        Ok(out)
    }
}

/// The body CRC RocketMQ stores: CRC-32 (IEEE) masked to 31 bits, as Java's `UtilAll.crc32`.
pub fn body_crc(body: &[u8]) -> u32 {
    crc32fast::hash(body) & 0x7FFF_FFFF
}

/// One message as stored and as returned by a pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    /// Where the message sits in the broker's log; part of the offset message id.
    pub physical_offset: i64,
    /// `sys_flag` bits; the two host-family bits are set from the addresses when encoding.
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    pub body: Bytes,
    pub topic: String,
    pub properties: BTreeMap<String, String>,
}

fn host_bytes(host: &SocketAddr) -> usize {
    match host {
        SocketAddr::V4(_) => 4 + 4,
        SocketAddr::V6(_) => 16 + 4,
    }
}

fn put_host(dst: &mut BytesMut, host: &SocketAddr) {
    match host.ip() {
        IpAddr::V4(ip) => dst.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => dst.extend_from_slice(&ip.octets()),
    }
    dst.put_i32(i32::from(host.port()));
}

fn read_host(
    reader: &mut Reader<'_>,
    ipv6: bool,
    what: &'static str,
) -> Result<SocketAddr, WireError> {
    let ip = if ipv6 {
        let bytes = reader.take(16, what)?;
        let mut octets = [0u8; 16];
        octets.copy_from_slice(bytes);
        IpAddr::V6(Ipv6Addr::from(octets))
    } else {
        let bytes = reader.take(4, what)?;
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    };
    let port = reader.i32(what)?;
    let port = u16::try_from(port).map_err(|_| WireError::InvalidField {
        field: what,
        value: port.to_string(),
        reason: "port out of range",
    })?;
    Ok(SocketAddr::new(ip, port))
}

impl StoredMessage {
    /// The sys flag as it is encoded: host-family bits follow the addresses.
    pub fn encoded_sys_flag(&self) -> i32 {
        let mut flag = self.sys_flag & !(sys_flag::BORNHOST_V6 | sys_flag::STOREHOST_V6);
        if self.born_host.is_ipv6() {
            flag |= sys_flag::BORNHOST_V6;
        }
        if self.store_host.is_ipv6() {
            flag |= sys_flag::STOREHOST_V6;
        }
        flag
    }

    /// The offset message id (store host and physical offset, in hex) that a broker returns
    /// as `msgId` in a send response.
    pub fn offset_msg_id(&self) -> String {
        offset_msg_id(self.store_host, self.physical_offset)
    }

    /// Appends the stored form. On error nothing is appended.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), WireError> {
        let properties = properties::render(&self.properties)?;
        if properties.len() > MAX_PROPERTIES_BYTES {
            return Err(WireError::Unencodable {
                what: "properties",
                reason: "longer than 32767 bytes",
            });
        }
        if self.topic.len() > MAX_TOPIC_BYTES {
            return Err(WireError::Unencodable {
                what: "topic",
                reason: "longer than 32767 bytes",
            });
        }
        let v2 = self.topic.len() > MAX_V1_TOPIC_BYTES;
        let topic_len_bytes = if v2 { 2 } else { 1 };
        let total = [
            4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8,
            host_bytes(&self.born_host),
            8,
            host_bytes(&self.store_host),
            4 + 8 + 4,
            self.body.len(),
            topic_len_bytes,
            self.topic.len(),
            2,
            properties.len(),
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add)
        .and_then(|total| i32::try_from(total).ok())
        .ok_or(WireError::Unencodable {
            what: "stored message",
            reason: "longer than i32::MAX bytes",
        })?;
        let body_len = i32::try_from(self.body.len()).map_err(|_| WireError::Unencodable {
            what: "body",
            reason: "longer than i32::MAX bytes",
        })?;

        dst.put_i32(total);
        dst.put_u32(if v2 { MAGIC_CODE_V2 } else { MAGIC_CODE_V1 });
        dst.put_u32(body_crc(&self.body));
        dst.put_i32(self.queue_id);
        dst.put_i32(self.flag);
        dst.put_i64(self.queue_offset);
        dst.put_i64(self.physical_offset);
        dst.put_i32(self.encoded_sys_flag());
        dst.put_i64(self.born_timestamp);
        put_host(dst, &self.born_host);
        dst.put_i64(self.store_timestamp);
        put_host(dst, &self.store_host);
        dst.put_i32(self.reconsume_times);
        dst.put_i64(self.prepared_transaction_offset);
        dst.put_i32(body_len);
        dst.extend_from_slice(&self.body);
        if v2 {
            // Checked above: at most i16::MAX.
            dst.put_i16(i16::try_from(self.topic.len()).unwrap_or(i16::MAX));
        } else {
            dst.put_u8(u8::try_from(self.topic.len()).unwrap_or(u8::MAX));
        }
        dst.extend_from_slice(self.topic.as_bytes());
        dst.put_i16(i16::try_from(properties.len()).unwrap_or(i16::MAX));
        dst.extend_from_slice(properties.as_bytes());
        Ok(())
    }

    /// Decodes the message at the start of `buf`, verifying its body CRC; returns it and the
    /// bytes it used. A message cut short is an error: pull bodies arrive whole.
    pub fn decode(buf: &[u8]) -> Result<(StoredMessage, usize), WireError> {
        let mut outer = Reader::new(buf);
        let total = outer.i32("message total size")?;
        let total_len = usize::try_from(total)
            .ok()
            .filter(|len| *len >= 4)
            .ok_or_else(|| WireError::bad_length("message total size", total, buf.len()))?;
        let message = buf
            .get(..total_len)
            .ok_or_else(|| WireError::bad_length("message total size", total, buf.len()))?;
        let mut reader = Reader::new(message);
        reader.i32("message total size")?;
        let magic = reader.u32("magic code")?;
        let v2 = match magic {
            MAGIC_CODE_V1 => false,
            MAGIC_CODE_V2 => true,
            other => return Err(WireError::BadMagic(other)),
        };
        let stored_crc = reader.u32("body CRC")?;
        let queue_id = reader.i32("queue id")?;
        let flag = reader.i32("flag")?;
        let queue_offset = reader.i64("queue offset")?;
        let physical_offset = reader.i64("physical offset")?;
        let sys_flag = reader.i32("sys flag")?;
        let born_timestamp = reader.i64("born timestamp")?;
        let born_host = read_host(
            &mut reader,
            sys_flag & sys_flag::BORNHOST_V6 != 0,
            "born host",
        )?;
        let store_timestamp = reader.i64("store timestamp")?;
        let store_host = read_host(
            &mut reader,
            sys_flag & sys_flag::STOREHOST_V6 != 0,
            "store host",
        )?;
        let reconsume_times = reader.i32("reconsume times")?;
        let prepared_transaction_offset = reader.i64("prepared transaction offset")?;
        let body_len = reader.i32("body length")?;
        let body = reader.sized(i64::from(body_len), "body")?;
        let computed = body_crc(body);
        if computed != stored_crc {
            return Err(WireError::BodyCrcMismatch {
                stored: stored_crc,
                computed,
            });
        }
        let topic_len = if v2 {
            i64::from(reader.i16("topic length")?)
        } else {
            i64::from(reader.u8("topic length")?)
        };
        let topic = reader.utf8(topic_len, "topic")?.to_owned();
        let properties_len = reader.i16("properties length")?;
        let properties_text = reader.utf8(i64::from(properties_len), "properties")?;
        if reader.remaining() != 0 {
            return Err(WireError::bad_length(
                "message total size",
                total,
                reader.position(),
            ));
        }
        Ok((
            StoredMessage {
                queue_id,
                flag,
                queue_offset,
                physical_offset,
                sys_flag,
                born_timestamp,
                born_host,
                store_timestamp,
                store_host,
                reconsume_times,
                prepared_transaction_offset,
                body: Bytes::copy_from_slice(body),
                topic,
                properties: properties::parse(properties_text),
            },
            total_len,
        ))
    }
}

/// The properties string of a stored message, found by walking its fixed fields without
/// copying or checking its body (the broker reads keys this way where it only needs them).
pub fn stored_properties(buf: &[u8]) -> Result<&str, WireError> {
    let mut reader = Reader::new(buf);
    let total = reader.i32("message total size")?;
    let total_len = usize::try_from(total)
        .ok()
        .filter(|len| *len >= 4 && *len <= buf.len())
        .ok_or_else(|| WireError::bad_length("message total size", total, buf.len()))?;
    let mut reader = Reader::new(&buf[..total_len]);
    reader.take(4, "message total size")?;
    let v2 = match reader.u32("magic code")? {
        MAGIC_CODE_V1 => false,
        MAGIC_CODE_V2 => true,
        other => return Err(WireError::BadMagic(other)),
    };
    // body CRC, queue id, flag, queue offset, physical offset
    reader.take(4 + 4 + 4 + 8 + 8, "fixed fields")?;
    let sys_flag = reader.i32("sys flag")?;
    let host = |v6: bool| if v6 { 16 + 4 } else { 4 + 4 };
    reader.take(8, "born timestamp")?;
    reader.take(host(sys_flag & sys_flag::BORNHOST_V6 != 0), "born host")?;
    reader.take(8, "store timestamp")?;
    reader.take(host(sys_flag & sys_flag::STOREHOST_V6 != 0), "store host")?;
    reader.take(4 + 8, "reconsume times and prepared transaction offset")?;
    let body_len = reader.i32("body length")?;
    reader.sized(i64::from(body_len), "body")?;
    let topic_len = if v2 {
        i64::from(reader.i16("topic length")?)
    } else {
        i64::from(reader.u8("topic length")?)
    };
    reader.sized(topic_len, "topic")?;
    let properties_len = reader.i16("properties length")?;
    reader.utf8(i64::from(properties_len), "properties")
}

/// Decodes a pull response body: stored messages back to back.
pub fn decode_stored(mut buf: &[u8]) -> Result<Vec<StoredMessage>, WireError> {
    let mut messages = Vec::new();
    while !buf.is_empty() {
        let (message, used) = StoredMessage::decode(buf)?;
        messages.push(message);
        buf = &buf[used..];
    }
    Ok(messages)
}

/// Encodes messages back to back, as a pull response body.
pub fn encode_stored(messages: &[StoredMessage], dst: &mut BytesMut) -> Result<(), WireError> {
    let start = dst.len();
    for message in messages {
        if let Err(error) = message.encode(dst) {
            dst.truncate(start);
            return Err(error);
        }
    }
    Ok(())
}

/// One message of a SEND_BATCH_MESSAGE body.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BatchMessage {
    pub flag: i32,
    pub body: Bytes,
    pub properties: BTreeMap<String, String>,
}

/// Appends a batch body as Java's `MessageDecoder.encodeMessages` writes it (magic and CRC 0).
/// On error nothing is appended.
pub fn encode_batch(messages: &[BatchMessage], dst: &mut BytesMut) -> Result<(), WireError> {
    let start = dst.len();
    let result = messages.iter().try_for_each(|message| {
        let properties = properties::render(&message.properties)?;
        let properties_len =
            i16::try_from(properties.len()).map_err(|_| WireError::Unencodable {
                what: "properties",
                reason: "longer than 32767 bytes",
            })?;
        let body_len = i32::try_from(message.body.len()).map_err(|_| WireError::Unencodable {
            what: "body",
            reason: "longer than i32::MAX bytes",
        })?;
        let total = BATCH_ELEMENT_FIXED_BYTES
            .checked_add(message.body.len())
            .and_then(|len| len.checked_add(properties.len()))
            .and_then(|len| i32::try_from(len).ok())
            .ok_or(WireError::Unencodable {
                what: "batch message",
                reason: "longer than i32::MAX bytes",
            })?;
        dst.put_i32(total);
        dst.put_i32(0);
        dst.put_i32(0);
        dst.put_i32(message.flag);
        dst.put_i32(body_len);
        dst.extend_from_slice(&message.body);
        dst.put_i16(properties_len);
        dst.extend_from_slice(properties.as_bytes());
        Ok(())
    });
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

/// Decodes a SEND_BATCH_MESSAGE body. Magic and CRC are not checked (clients send 0).
pub fn decode_batch(mut buf: &[u8]) -> Result<Vec<BatchMessage>, WireError> {
    let mut messages = Vec::new();
    while !buf.is_empty() {
        let mut outer = Reader::new(buf);
        let total = outer.i32("batch message total size")?;
        let total_len = usize::try_from(total)
            .ok()
            .filter(|len| *len >= BATCH_ELEMENT_FIXED_BYTES && *len <= buf.len())
            .ok_or_else(|| WireError::bad_length("batch message total size", total, buf.len()))?;
        let mut reader = Reader::new(&buf[..total_len]);
        reader.i32("batch message total size")?;
        reader.i32("magic code")?;
        reader.i32("body CRC")?;
        let flag = reader.i32("flag")?;
        let body_len = reader.i32("body length")?;
        let body = reader.sized(i64::from(body_len), "body")?;
        let properties_len = reader.i16("properties length")?;
        let properties_text = reader.utf8(i64::from(properties_len), "properties")?;
        if reader.remaining() != 0 {
            return Err(WireError::bad_length(
                "batch message total size",
                total,
                reader.position(),
            ));
        }
        messages.push(BatchMessage {
            flag,
            body: Bytes::copy_from_slice(body),
            properties: properties::parse(properties_text),
        });
        buf = &buf[total_len..];
    }
    Ok(messages)
}

/// The offset message id: store host IP, port (i32) and physical offset (i64), as upper-case
/// hex (32 characters for IPv4, 56 for IPv6), as Java's `MessageDecoder.createMessageId`.
pub fn offset_msg_id(store_host: SocketAddr, physical_offset: i64) -> String {
    let mut bytes = Vec::with_capacity(28);
    match store_host.ip() {
        IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
    }
    bytes.extend_from_slice(&i32::from(store_host.port()).to_be_bytes());
    bytes.extend_from_slice(&physical_offset.to_be_bytes());
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02X}");
    }
    text
}

/// Parses an offset message id back into store host and physical offset.
pub fn parse_offset_msg_id(id: &str) -> Result<(SocketAddr, i64), WireError> {
    let invalid = |reason| WireError::InvalidField {
        field: "msgId",
        value: id.to_owned(),
        reason,
    };
    let ip_len = match id.len() {
        32 => 4,
        56 => 16,
        _ => return Err(invalid("expected 32 (IPv4) or 56 (IPv6) hex digits")),
    };
    let mut bytes = Vec::with_capacity(id.len() / 2);
    for pair in id.as_bytes().chunks(2) {
        let text = std::str::from_utf8(pair).map_err(|_| invalid("not hex"))?;
        bytes.push(u8::from_str_radix(text, 16).map_err(|_| invalid("not hex"))?);
    }
    let mut reader = Reader::new(&bytes);
    let host = read_host(&mut reader, ip_len == 16, "msgId")?;
    let offset = reader.i64("msgId")?;
    Ok((host, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredMessage {
        StoredMessage {
            queue_id: 3,
            flag: 9,
            queue_offset: 11,
            physical_offset: 13,
            sys_flag: 0,
            born_timestamp: 17,
            born_host: "127.0.0.1:10911".parse().unwrap(),
            store_timestamp: 19,
            store_host: "127.0.0.2:10912".parse().unwrap(),
            reconsume_times: 2,
            prepared_transaction_offset: 23,
            body: Bytes::from_static(b"body"),
            topic: "topic".into(),
            properties: BTreeMap::from([("k".to_owned(), "value".to_owned())]),
        }
    }

    fn encoded(message: &StoredMessage) -> Vec<u8> {
        let mut buf = BytesMut::new();
        message.encode(&mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn stored_layout_matches_hand_written_bytes() {
        let mut expected = Vec::new();
        expected.extend_from_slice(&0i32.to_be_bytes()); // patched below
        expected.extend_from_slice(&0xDAA3_20A7u32.to_be_bytes());
        expected.extend_from_slice(&body_crc(b"body").to_be_bytes());
        expected.extend_from_slice(&3i32.to_be_bytes());
        expected.extend_from_slice(&9i32.to_be_bytes());
        expected.extend_from_slice(&11i64.to_be_bytes());
        expected.extend_from_slice(&13i64.to_be_bytes());
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.extend_from_slice(&17i64.to_be_bytes());
        expected.extend_from_slice(&[127, 0, 0, 1]);
        expected.extend_from_slice(&10911i32.to_be_bytes());
        expected.extend_from_slice(&19i64.to_be_bytes());
        expected.extend_from_slice(&[127, 0, 0, 2]);
        expected.extend_from_slice(&10912i32.to_be_bytes());
        expected.extend_from_slice(&2i32.to_be_bytes());
        expected.extend_from_slice(&23i64.to_be_bytes());
        expected.extend_from_slice(&4i32.to_be_bytes());
        expected.extend_from_slice(b"body");
        expected.push(5);
        expected.extend_from_slice(b"topic");
        expected.extend_from_slice(&8i16.to_be_bytes());
        expected.extend_from_slice(b"k\x01value\x02");
        let len = expected.len() as i32;
        expected[..4].copy_from_slice(&len.to_be_bytes());

        assert_eq!(encoded(&sample()), expected);
        assert_eq!(
            StoredMessage::decode(&expected).unwrap(),
            (sample(), expected.len())
        );
    }

    #[test]
    fn stored_properties_are_found_without_decoding_for_both_host_families_and_topic_lengths() {
        let mut message = sample();
        message
            .properties
            .insert(property::UNIQ_KEY.into(), "U1".into());
        for (born, topic) in [
            ("127.0.0.1:1", "t".to_string()),
            ("[::1]:1", "x".repeat(MAX_V1_TOPIC_BYTES + 1)),
        ] {
            message.born_host = born.parse().unwrap();
            message.store_host = born.parse().unwrap();
            message.topic = topic;
            let bytes = encoded(&message);
            let text = stored_properties(&bytes).unwrap();
            assert_eq!(properties::find(text, property::UNIQ_KEY), Some("U1"));
            assert_eq!(properties::find(text, "k"), Some("value"));
            assert_eq!(properties::find(text, "absent"), None);
            for len in 0..bytes.len() {
                assert!(stored_properties(&bytes[..len]).is_err(), "prefix {len}");
            }
        }
    }

    #[test]
    fn crc_is_java_masked_crc32() {
        // CRC-32 of "123456789" is 0xCBF43926; masked to 31 bits.
        assert_eq!(body_crc(b"123456789"), 0xCBF4_3926 & 0x7FFF_FFFF);
        assert_eq!(body_crc(b""), 0);
    }

    #[test]
    fn round_trips_ipv6_and_v2_topics() {
        let mut message = sample();
        message.born_host = "[::1]:1234".parse().unwrap();
        message.store_host = "[fe80::2]:10911".parse().unwrap();
        message.topic = "t".repeat(200);
        message.sys_flag = sys_flag::MULTI_TAGS;
        let bytes = encoded(&message);
        assert_eq!(&bytes[4..8], &MAGIC_CODE_V2.to_be_bytes());
        let (decoded, used) = StoredMessage::decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            decoded.sys_flag,
            sys_flag::MULTI_TAGS | sys_flag::BORNHOST_V6 | sys_flag::STOREHOST_V6
        );
        message.sys_flag = decoded.sys_flag;
        assert_eq!(decoded, message);
    }

    #[test]
    fn decodes_a_pull_body_of_several_messages() {
        let mut second = sample();
        second.queue_offset = 12;
        second.body = Bytes::new();
        second.properties.clear();
        let mut buf = BytesMut::new();
        encode_stored(&[sample(), second.clone()], &mut buf).unwrap();
        assert_eq!(decode_stored(&buf).unwrap(), vec![sample(), second]);
        assert!(decode_stored(&[]).unwrap().is_empty());
    }

    #[test]
    fn rejects_truncated_corrupt_and_inconsistent_messages() {
        let bytes = encoded(&sample());
        for end in 0..bytes.len() {
            assert!(
                StoredMessage::decode(&bytes[..end]).is_err(),
                "prefix {end}"
            );
        }
        let mut corrupt = bytes.clone();
        let body_at = bytes.len() - 2 - 8 - 1 - 5 - 4;
        corrupt[body_at] ^= 0xFF;
        assert!(matches!(
            StoredMessage::decode(&corrupt),
            Err(WireError::BodyCrcMismatch { .. })
        ));
        let mut magic = bytes.clone();
        magic[4] = 0;
        assert!(matches!(
            StoredMessage::decode(&magic),
            Err(WireError::BadMagic(_))
        ));
        // A total size larger than the fields it holds.
        let mut padded = bytes.clone();
        padded.push(0);
        let len = padded.len() as i32;
        padded[..4].copy_from_slice(&len.to_be_bytes());
        assert!(StoredMessage::decode(&padded).is_err());
    }

    #[test]
    fn batch_layout_and_round_trip() {
        let messages = vec![
            BatchMessage {
                flag: 1,
                body: Bytes::from_static(b"ab"),
                properties: BTreeMap::from([("UNIQ_KEY".to_owned(), "X".to_owned())]),
            },
            BatchMessage::default(),
        ];
        let mut buf = BytesMut::new();
        encode_batch(&messages, &mut buf).unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(&(22 + 2 + 11i32).to_be_bytes());
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&2i32.to_be_bytes());
        expected.extend_from_slice(b"ab");
        expected.extend_from_slice(&11i16.to_be_bytes());
        expected.extend_from_slice(b"UNIQ_KEY\x01X\x02");
        expected.extend_from_slice(&22i32.to_be_bytes());
        expected.extend_from_slice(&[0; 12]);
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.extend_from_slice(&0i16.to_be_bytes());
        assert_eq!(&buf[..], &expected[..]);
        assert_eq!(decode_batch(&buf).unwrap(), messages);
        for end in 1..buf.len() {
            if end == 35 {
                continue; // a whole first element is a valid batch
            }
            assert!(decode_batch(&buf[..end]).is_err(), "prefix {end}");
        }
    }

    #[test]
    fn properties_parse_like_java_and_refuse_separators() {
        let parsed =
            properties::parse("a\u{1}1\u{2}\u{2}noseparator\u{2}\u{1}x\u{2}b\u{1}\u{2}a\u{1}2");
        assert_eq!(
            parsed,
            BTreeMap::from([
                ("a".to_owned(), "2".to_owned()),
                ("b".to_owned(), String::new())
            ])
        );
        let bad = BTreeMap::from([("k".to_owned(), "v\u{2}".to_owned())]);
        assert!(properties::render(&bad).is_err());
        let empty_name = BTreeMap::from([(String::new(), "v".to_owned())]);
        assert!(properties::render(&empty_name).is_err());
    }

    #[test]
    fn offset_msg_id_matches_java_format() {
        let id = offset_msg_id("127.0.0.1:10911".parse().unwrap(), 0x1234);
        assert_eq!(id, "7F00000100002A9F0000000000001234");
        assert_eq!(
            parse_offset_msg_id(&id).unwrap(),
            ("127.0.0.1:10911".parse().unwrap(), 0x1234)
        );
        let v6 = offset_msg_id("[::1]:80".parse().unwrap(), 7);
        assert_eq!(v6.len(), 56);
        assert_eq!(
            parse_offset_msg_id(&v6).unwrap(),
            ("[::1]:80".parse().unwrap(), 7)
        );
        assert!(parse_offset_msg_id("XYZ").is_err());
        assert!(parse_offset_msg_id(&"G".repeat(32)).is_err());
        assert!(parse_offset_msg_id(&"é".repeat(16)).is_err());
    }
}
