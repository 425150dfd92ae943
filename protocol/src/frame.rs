//! The remoting frame: one request or response on a connection.
//!
//! ```text
//! +------------------+----------------------------------+--------------+-----------+
//! | i32 total length | i32 (serialize type << 24)       | header bytes | body      |
//! | (excludes itself)|     | header length (24 bits)    | (JSON or     | (opaque)  |
//! |                  |                                  |  ROCKETMQ)   |           |
//! +------------------+----------------------------------+--------------+-----------+
//!   big-endian; total length = 4 + header length + body length
//! ```
//!
//! The JSON header is an object with the Java field names `code`, `language` ("JAVA", "RUST",
//! ...), `version`, `opaque`, `flag`, `remark`, `extFields` (string to string) and
//! `serializeTypeCurrentRPC`. The binary ROCKETMQ header is:
//!
//! ```text
//! i16 code | u8 language | i16 version | i32 opaque | i32 flag
//! | i32 remark length | remark bytes
//! | i32 extFields length | (i16 key length, key, i32 value length, value)*
//! ```
//!
//! A response is encoded with the serialize type its request came in
//! ([`RemotingCommand::new_response`] copies it).

use std::collections::BTreeMap;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::header::ExtHeader;
use crate::reader::Reader;

/// The largest value the total-length field may hold (the frame after its 4-byte length):
/// 16 MiB, as RocketMQ. Checked before any buffer is sized from it.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of the leading total-length field.
pub const LENGTH_FIELD_BYTES: usize = 4;

/// Bytes of the serialize-type/header-length field.
const HEADER_LENGTH_FIELD_BYTES: usize = 4;

/// The header length shares its i32 with the serialize type, leaving it 24 bits.
pub const MAX_HEADER_BYTES: usize = 0x00FF_FFFF;

/// Flag bit 0: this command is a response.
pub const FLAG_RESPONSE: i32 = 1;

/// Flag bit 1: this request expects no response.
pub const FLAG_ONEWAY: i32 = 1 << 1;

/// The version RaftMQ puts in its commands: RocketMQ 5.3.1's ordinal, the same the Rust
/// RocketMQ client 1.0.0 sends, so version checks on either side treat us as a 5.x peer.
pub const REMOTING_VERSION: i32 = 474;

/// The language responses claim. JAVA is understood by every RocketMQ client, including Java
/// clients older than the RUST language code.
pub const RESPONSE_LANGUAGE: LanguageCode = LanguageCode::Java;

/// Which header encoding a frame uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SerializeType {
    /// A JSON object (the default of every RocketMQ client).
    #[default]
    Json,
    /// RocketMQ's compact binary header.
    RocketMq,
}

impl SerializeType {
    /// The code carried in the top byte of the header-length field.
    pub fn code(self) -> u8 {
        match self {
            SerializeType::Json => 0,
            SerializeType::RocketMq => 1,
        }
    }

    pub fn from_code(code: u8) -> Result<Self, WireError> {
        match code {
            0 => Ok(SerializeType::Json),
            1 => Ok(SerializeType::RocketMq),
            other => Err(WireError::UnknownSerializeType(other)),
        }
    }

    /// The name the JSON header's `serializeTypeCurrentRPC` carries.
    pub fn name(self) -> &'static str {
        match self {
            SerializeType::Json => "JSON",
            SerializeType::RocketMq => "ROCKETMQ",
        }
    }
}

/// The client language, as Java's `LanguageCode` (JAVA = 0 ... RUST = 12, NODE_JS = 13).
/// Codes and names this list does not know decode as `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LanguageCode {
    Java,
    Cpp,
    Dotnet,
    Python,
    Delphi,
    Erlang,
    Ruby,
    Other,
    Http,
    Go,
    Php,
    Oms,
    Rust,
    NodeJs,
}

const LANGUAGES: [(LanguageCode, &str); 14] = [
    (LanguageCode::Java, "JAVA"),
    (LanguageCode::Cpp, "CPP"),
    (LanguageCode::Dotnet, "DOTNET"),
    (LanguageCode::Python, "PYTHON"),
    (LanguageCode::Delphi, "DELPHI"),
    (LanguageCode::Erlang, "ERLANG"),
    (LanguageCode::Ruby, "RUBY"),
    (LanguageCode::Other, "OTHER"),
    (LanguageCode::Http, "HTTP"),
    (LanguageCode::Go, "GO"),
    (LanguageCode::Php, "PHP"),
    (LanguageCode::Oms, "OMS"),
    (LanguageCode::Rust, "RUST"),
    (LanguageCode::NodeJs, "NODE_JS"),
];

impl LanguageCode {
    /// The byte the ROCKETMQ header carries.
    pub fn code(self) -> u8 {
        // The table is in code order; the position of a variant is its code.
        LANGUAGES
            .iter()
            .position(|(language, _)| *language == self)
            .and_then(|index| u8::try_from(index).ok())
            .unwrap_or(7)
    }

    pub fn from_code(code: u8) -> Self {
        LANGUAGES
            .get(usize::from(code))
            .map_or(LanguageCode::Other, |(language, _)| *language)
    }

    /// The name the JSON header carries.
    pub fn name(self) -> &'static str {
        LANGUAGES
            .iter()
            .find(|(language, _)| *language == self)
            .map_or("OTHER", |(_, name)| name)
    }

    pub fn from_name(name: &str) -> Self {
        LANGUAGES
            .iter()
            .find(|(_, known)| *known == name)
            .map_or(LanguageCode::Other, |(language, _)| *language)
    }
}

/// One remoting command: a request or a response.
#[derive(Clone, PartialEq, Eq)]
pub struct RemotingCommand {
    /// A request code (`code::request`) or, in a response, a response code (`code::response`).
    pub code: i32,
    pub language: LanguageCode,
    pub version: i32,
    /// Chosen by the requester; a response carries its request's opaque.
    pub opaque: i32,
    /// Bit 0 response, bit 1 oneway.
    pub flag: i32,
    pub remark: Option<String>,
    /// The typed request/response header, as strings (see `header`).
    pub ext_fields: BTreeMap<String, String>,
    pub body: Bytes,
    /// The header encoding this command arrived in or will be sent in.
    pub serialize_type: SerializeType,
}

impl fmt::Debug for RemotingCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body can be megabytes: show its length only.
        f.debug_struct("RemotingCommand")
            .field("code", &self.code)
            .field("language", &self.language)
            .field("version", &self.version)
            .field("opaque", &self.opaque)
            .field("flag", &self.flag)
            .field("remark", &self.remark)
            .field("ext_fields", &self.ext_fields)
            .field("body_len", &self.body.len())
            .field("serialize_type", &self.serialize_type)
            .finish()
    }
}

impl RemotingCommand {
    /// A request with this code, language RUST, JSON header, opaque 0 (the RPC client assigns
    /// a fresh one when sending).
    pub fn new_request(code: i32) -> Self {
        RemotingCommand {
            code,
            language: LanguageCode::Rust,
            version: REMOTING_VERSION,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields: BTreeMap::new(),
            body: Bytes::new(),
            serialize_type: SerializeType::Json,
        }
    }

    /// The response to this request: same opaque and serialize type, the response flag set.
    pub fn new_response(&self, code: i32, remark: Option<String>) -> Self {
        RemotingCommand {
            code,
            language: RESPONSE_LANGUAGE,
            version: REMOTING_VERSION,
            opaque: self.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ext_fields: BTreeMap::new(),
            body: Bytes::new(),
            serialize_type: self.serialize_type,
        }
    }

    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// Marks this request as oneway (no response expected).
    pub fn into_oneway(mut self) -> Self {
        self.flag |= FLAG_ONEWAY;
        self
    }

    /// Adds the fields of a typed header to `ext_fields`.
    pub fn with_header<H: ExtHeader>(mut self, header: &H) -> Self {
        self.ext_fields.extend(header.to_ext_fields());
        self
    }

    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn with_remark(mut self, remark: impl Into<String>) -> Self {
        self.remark = Some(remark.into());
        self
    }

    pub fn with_serialize_type(mut self, serialize_type: SerializeType) -> Self {
        self.serialize_type = serialize_type;
        self
    }

    /// Parses the typed header `H` from `ext_fields`.
    pub fn decode_header<H: ExtHeader>(&self) -> Result<H, WireError> {
        H::from_ext_fields(&self.ext_fields)
    }

    /// One extension field, if present.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key).map(String::as_str)
    }
}

/// The full length (length field included) of the frame at the start of `buf`, after checking
/// the announced length against [`MAX_FRAME_BYTES`]. `Ok(None)`: fewer than 4 bytes so far.
/// A reader calls this before growing its buffer for the rest of the frame.
pub fn frame_length(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.get(..LENGTH_FIELD_BYTES) else {
        return Ok(None);
    };
    let announced = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let total = usize::try_from(announced)
        .map_err(|_| WireError::bad_length("frame total length", announced, buf.len()))?;
    if total > MAX_FRAME_BYTES {
        return Err(WireError::FrameTooLarge {
            len: u64::try_from(total).unwrap_or(u64::MAX),
            max: MAX_FRAME_BYTES,
        });
    }
    if total < HEADER_LENGTH_FIELD_BYTES {
        return Err(WireError::bad_length(
            "frame total length",
            announced,
            HEADER_LENGTH_FIELD_BYTES,
        ));
    }
    let full = total
        .checked_add(LENGTH_FIELD_BYTES)
        .ok_or(WireError::FrameTooLarge {
            len: u64::MAX,
            max: MAX_FRAME_BYTES,
        })?;
    Ok(Some(full))
}

/// Decodes the frame at the start of `buf`, copying its body. Returns the command and the
/// number of bytes it used; `Ok(None)` when `buf` holds only part of a frame.
pub fn decode(buf: &[u8]) -> Result<Option<(RemotingCommand, usize)>, WireError> {
    let Some(full) = frame_length(buf)? else {
        return Ok(None);
    };
    let Some(frame) = buf.get(LENGTH_FIELD_BYTES..full) else {
        return Ok(None);
    };
    let (mut command, body_start) = decode_payload(frame)?;
    command.body = Bytes::copy_from_slice(&frame[body_start..]);
    Ok(Some((command, full)))
}

/// Decodes the frame at the start of `buf` and removes it from `buf`; the body shares `buf`'s
/// allocation (no copy). `Ok(None)` when `buf` holds only part of a frame. On error `buf` is
/// left as it was: the caller closes the connection.
pub fn decode_from(buf: &mut BytesMut) -> Result<Option<RemotingCommand>, WireError> {
    let Some(full) = frame_length(buf)? else {
        return Ok(None);
    };
    if buf.len() < full {
        return Ok(None);
    }
    let (mut command, body_start) = decode_payload(&buf[LENGTH_FIELD_BYTES..full])?;
    let frame = buf.split_to(full).freeze();
    command.body = frame.slice(LENGTH_FIELD_BYTES + body_start..);
    Ok(Some(command))
}

/// Parses the header of a complete frame payload (the bytes after the total-length field).
/// Returns the command without its body, and where the body starts in `payload`.
fn decode_payload(payload: &[u8]) -> Result<(RemotingCommand, usize), WireError> {
    let mut reader = Reader::new(payload);
    let marker = reader.i32("serialize type and header length")?;
    let serialize_type = SerializeType::from_code(marker.to_be_bytes()[0])?;
    let header_len = usize::try_from(marker & 0x00FF_FFFF).unwrap_or(usize::MAX);
    let header = reader.take(header_len, "frame header")?;
    let command = match serialize_type {
        SerializeType::Json => decode_json_header(header)?,
        SerializeType::RocketMq => decode_binary_header(header)?,
    };
    Ok((command, reader.position()))
}

/// Appends `command` as one frame. On error nothing is appended.
pub fn encode(command: &RemotingCommand, dst: &mut BytesMut) -> Result<(), WireError> {
    encode_head(command, dst)?;
    dst.extend_from_slice(&command.body);
    Ok(())
}

/// Appends everything of the frame but the body (whose length the head accounts for), so a
/// writer can send `command.body` after it without copying it. On error nothing is appended.
pub fn encode_head(command: &RemotingCommand, dst: &mut BytesMut) -> Result<(), WireError> {
    let start = dst.len();
    let result = encode_head_inner(command, dst, start);
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

fn encode_head_inner(
    command: &RemotingCommand,
    dst: &mut BytesMut,
    start: usize,
) -> Result<(), WireError> {
    dst.put_bytes(0, LENGTH_FIELD_BYTES + HEADER_LENGTH_FIELD_BYTES);
    match command.serialize_type {
        SerializeType::Json => encode_json_header(command, dst)?,
        SerializeType::RocketMq => encode_binary_header(command, dst)?,
    }
    let header_len = dst.len() - start - LENGTH_FIELD_BYTES - HEADER_LENGTH_FIELD_BYTES;
    if header_len > MAX_HEADER_BYTES {
        return Err(WireError::Unencodable {
            what: "frame header",
            reason: "longer than the 24-bit header length field",
        });
    }
    let total = HEADER_LENGTH_FIELD_BYTES
        .checked_add(header_len)
        .and_then(|len| len.checked_add(command.body.len()))
        .filter(|len| *len <= MAX_FRAME_BYTES)
        .ok_or(WireError::FrameTooLarge {
            len: (HEADER_LENGTH_FIELD_BYTES as u64)
                .saturating_add(header_len as u64)
                .saturating_add(command.body.len() as u64),
            max: MAX_FRAME_BYTES,
        })?;
    // Both fit in i32: total <= 16 MiB, header_len <= 24 bits.
    let total_i32 = i32::try_from(total).map_err(|_| WireError::Unencodable {
        what: "frame",
        reason: "total length does not fit i32",
    })?;
    let marker = (i32::from(command.serialize_type.code()) << 24)
        | i32::try_from(header_len).map_err(|_| WireError::Unencodable {
            what: "frame header",
            reason: "header length does not fit i32",
        })?;
    dst[start..start + 4].copy_from_slice(&total_i32.to_be_bytes());
    dst[start + 4..start + 8].copy_from_slice(&marker.to_be_bytes());
    Ok(())
}

#[derive(Serialize)]
struct JsonHeaderOut<'a> {
    code: i32,
    language: &'static str,
    version: i32,
    opaque: i32,
    flag: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
    #[serde(rename = "extFields")]
    ext_fields: &'a BTreeMap<String, String>,
    #[serde(rename = "serializeTypeCurrentRPC")]
    serialize_type: &'static str,
}

fn encode_json_header(command: &RemotingCommand, dst: &mut BytesMut) -> Result<(), WireError> {
    let header = JsonHeaderOut {
        code: command.code,
        language: command.language.name(),
        version: command.version,
        opaque: command.opaque,
        flag: command.flag,
        remark: command.remark.as_deref(),
        ext_fields: &command.ext_fields,
        serialize_type: SerializeType::Json.name(),
    };
    serde_json::to_writer((&mut *dst).writer(), &header)
        .map_err(|source| WireError::json("frame header", source))
}

/// Every field optional: real clients omit some; only `code` is required.
#[derive(Deserialize)]
struct JsonHeaderIn {
    code: Option<i32>,
    language: Option<serde_json::Value>,
    version: Option<i32>,
    opaque: Option<i32>,
    flag: Option<i32>,
    remark: Option<String>,
    #[serde(rename = "extFields")]
    ext_fields: Option<BTreeMap<String, serde_json::Value>>,
}

fn decode_json_header(header: &[u8]) -> Result<RemotingCommand, WireError> {
    let parsed: JsonHeaderIn =
        serde_json::from_slice(header).map_err(|source| WireError::json("frame header", source))?;
    let code = parsed
        .code
        .ok_or(WireError::MissingField { field: "code" })?;
    let language = match parsed.language {
        Some(serde_json::Value::String(name)) => LanguageCode::from_name(&name),
        Some(serde_json::Value::Number(number)) => number
            .as_u64()
            .and_then(|code| u8::try_from(code).ok())
            .map_or(LanguageCode::Other, LanguageCode::from_code),
        _ => LanguageCode::Other,
    };
    let mut ext_fields = BTreeMap::new();
    for (key, value) in parsed.ext_fields.unwrap_or_default() {
        // Java writes strings; accept numbers and booleans too, skip nulls.
        let value = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Null => continue,
            serde_json::Value::Number(number) => number.to_string(),
            serde_json::Value::Bool(flag) => flag.to_string(),
            _ => {
                return Err(WireError::InvalidField {
                    field: "extFields",
                    value: key,
                    reason: "extension field values must be strings",
                });
            }
        };
        ext_fields.insert(key, value);
    }
    Ok(RemotingCommand {
        code,
        language,
        version: parsed.version.unwrap_or(0),
        opaque: parsed.opaque.unwrap_or(0),
        flag: parsed.flag.unwrap_or(0),
        remark: parsed.remark,
        ext_fields,
        body: Bytes::new(),
        serialize_type: SerializeType::Json,
    })
}

fn encode_binary_header(command: &RemotingCommand, dst: &mut BytesMut) -> Result<(), WireError> {
    let code = i16::try_from(command.code).map_err(|_| WireError::Unencodable {
        what: "code",
        reason: "the ROCKETMQ header holds codes as i16",
    })?;
    let version = i16::try_from(command.version).map_err(|_| WireError::Unencodable {
        what: "version",
        reason: "the ROCKETMQ header holds versions as i16",
    })?;
    dst.put_i16(code);
    dst.put_u8(command.language.code());
    dst.put_i16(version);
    dst.put_i32(command.opaque);
    dst.put_i32(command.flag);
    let remark = command.remark.as_deref().unwrap_or("").as_bytes();
    dst.put_i32(len_i32(remark.len(), "remark")?);
    dst.extend_from_slice(remark);

    let mut ext_len: usize = 0;
    for (key, value) in &command.ext_fields {
        if i16::try_from(key.len()).is_err() {
            return Err(WireError::Unencodable {
                what: "extFields key",
                reason: "longer than i16::MAX bytes",
            });
        }
        ext_len = ext_len
            .checked_add(2 + key.len())
            .and_then(|len| len.checked_add(4))
            .and_then(|len| len.checked_add(value.len()))
            .ok_or(WireError::Unencodable {
                what: "extFields",
                reason: "length overflows",
            })?;
    }
    dst.put_i32(len_i32(ext_len, "extFields")?);
    for (key, value) in &command.ext_fields {
        // Checked above: key.len() fits i16.
        dst.put_i16(i16::try_from(key.len()).unwrap_or(i16::MAX));
        dst.extend_from_slice(key.as_bytes());
        dst.put_i32(len_i32(value.len(), "extFields value")?);
        dst.extend_from_slice(value.as_bytes());
    }
    Ok(())
}

fn len_i32(len: usize, what: &'static str) -> Result<i32, WireError> {
    i32::try_from(len).map_err(|_| WireError::Unencodable {
        what,
        reason: "longer than i32::MAX bytes",
    })
}

fn decode_binary_header(header: &[u8]) -> Result<RemotingCommand, WireError> {
    let mut reader = Reader::new(header);
    let code = i32::from(reader.i16("code")?);
    let language = LanguageCode::from_code(reader.u8("language")?);
    let version = i32::from(reader.i16("version")?);
    let opaque = reader.i32("opaque")?;
    let flag = reader.i32("flag")?;
    // As Java: a length <= 0 means "absent".
    let remark_len = reader.i32("remark length")?;
    let remark = if remark_len > 0 {
        Some(reader.utf8(i64::from(remark_len), "remark")?.to_owned())
    } else {
        None
    };
    let ext_len = reader.i32("extFields length")?;
    let mut ext_fields = BTreeMap::new();
    if ext_len > 0 {
        let ext_bytes = reader.sized(i64::from(ext_len), "extFields")?;
        let mut fields = Reader::new(ext_bytes);
        while fields.remaining() > 0 {
            // Java writes a short; the Rust client a u16: read it unsigned, accepting both.
            let key_len = fields.u16("extFields key length")?;
            let key = fields.utf8(i64::from(key_len), "extFields key")?;
            let value_len = fields.i32("extFields value length")?;
            let value = fields.utf8(i64::from(value_len), "extFields value")?;
            ext_fields.insert(key.to_owned(), value.to_owned());
        }
    }
    // Like Java, bytes after the extFields are ignored.
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body: Bytes::new(),
        serialize_type: SerializeType::RocketMq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(serialize_type: SerializeType) -> RemotingCommand {
        let mut command = RemotingCommand::new_request(105).with_serialize_type(serialize_type);
        command.opaque = 7;
        command.remark = Some("héllo".into());
        command.ext_fields.insert("topic".into(), "TopicA".into());
        command.ext_fields.insert("queueId".into(), "3".into());
        command.body = Bytes::from_static(b"\x00body\xff");
        command
    }

    fn encoded(command: &RemotingCommand) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(command, &mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn round_trips_both_header_types() {
        for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
            let command = sample(serialize_type);
            let bytes = encoded(&command);
            let (decoded, used) = decode(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(decoded, command);

            let mut head = BytesMut::new();
            encode_head(&command, &mut head).unwrap();
            head.extend_from_slice(&command.body);
            assert_eq!(&head[..], &bytes[..]);

            let mut buf = BytesMut::from(&bytes[..]);
            buf.extend_from_slice(b"next");
            let decoded = decode_from(&mut buf).unwrap().unwrap();
            assert_eq!(decoded, command);
            assert_eq!(&buf[..], b"next");
        }
    }

    #[test]
    fn every_prefix_needs_more_bytes() {
        for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
            let bytes = encoded(&sample(serialize_type));
            for end in 0..bytes.len() {
                assert!(
                    decode(&bytes[..end]).unwrap().is_none(),
                    "prefix of {end} bytes"
                );
                let mut buf = BytesMut::from(&bytes[..end]);
                assert!(decode_from(&mut buf).unwrap().is_none());
                assert_eq!(buf.len(), end);
            }
        }
    }

    #[test]
    fn response_mirrors_opaque_and_serialize_type() {
        let request = sample(SerializeType::RocketMq);
        let response = request.new_response(17, Some("no route".into()));
        assert_eq!(response.opaque, 7);
        assert!(response.is_response());
        assert!(!response.is_oneway());
        assert_eq!(response.serialize_type, SerializeType::RocketMq);
        assert!(!request.is_response());
        assert!(request.clone().into_oneway().is_oneway());
    }

    #[test]
    fn json_frame_layout_matches_hand_written_bytes() {
        let mut command = RemotingCommand::new_request(105);
        command.opaque = 1;
        command.ext_fields.insert("topic".into(), "T".into());
        command.body = Bytes::from_static(b"xy");
        let header = br#"{"code":105,"language":"RUST","version":474,"opaque":1,"flag":0,"extFields":{"topic":"T"},"serializeTypeCurrentRPC":"JSON"}"#;
        let mut expected = Vec::new();
        expected.extend_from_slice(&((4 + header.len() + 2) as i32).to_be_bytes());
        expected.extend_from_slice(&(header.len() as i32).to_be_bytes());
        expected.extend_from_slice(header);
        expected.extend_from_slice(b"xy");
        assert_eq!(encoded(&command), expected);
    }

    #[test]
    fn binary_frame_layout_matches_hand_written_bytes() {
        let mut command =
            RemotingCommand::new_request(34).with_serialize_type(SerializeType::RocketMq);
        command.opaque = 0x0102_0304;
        command.flag = FLAG_ONEWAY;
        command.remark = Some("r".into());
        command.ext_fields.insert("k".into(), "vv".into());
        #[rustfmt::skip]
        let header: &[u8] = &[
            0x00, 0x22,             // code 34
            12,                     // language RUST
            0x01, 0xDA,             // version 474
            0x01, 0x02, 0x03, 0x04, // opaque
            0x00, 0x00, 0x00, 0x02, // flag: oneway
            0x00, 0x00, 0x00, 0x01, b'r',
            0x00, 0x00, 0x00, 0x09, // extFields length: 2 + 1 + 4 + 2
            0x00, 0x01, b'k', 0x00, 0x00, 0x00, 0x02, b'v', b'v',
        ];
        let mut expected = Vec::new();
        expected.extend_from_slice(&((4 + header.len()) as i32).to_be_bytes());
        expected.extend_from_slice(&(0x0100_0000 | header.len() as i32).to_be_bytes());
        expected.extend_from_slice(header);
        assert_eq!(encoded(&command), expected);
        let (decoded, _) = decode(&expected).unwrap().unwrap();
        assert_eq!(decoded, command);
    }

    #[test]
    fn decodes_a_java_style_header_with_missing_and_extra_fields() {
        // No version, no flag, no remark, an unknown field, a numeric language, numeric values.
        let header = br#"{"code":103,"language":0,"opaque":42,"extFields":{"brokerId":0,"compressed":false,"x":null},"unknown":true}"#;
        let mut frame = Vec::new();
        frame.extend_from_slice(&((4 + header.len()) as i32).to_be_bytes());
        frame.extend_from_slice(&(header.len() as i32).to_be_bytes());
        frame.extend_from_slice(header);
        let (command, _) = decode(&frame).unwrap().unwrap();
        assert_eq!(command.code, 103);
        assert_eq!(command.language, LanguageCode::Java);
        assert_eq!(command.opaque, 42);
        assert_eq!(command.flag, 0);
        assert_eq!(command.ext("brokerId"), Some("0"));
        assert_eq!(command.ext("compressed"), Some("false"));
        assert_eq!(command.ext("x"), None);
    }

    #[test]
    fn rejects_oversized_frames_before_reading_them() {
        let mut frame = ((MAX_FRAME_BYTES + 1) as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode(&frame),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            decode(&(-1i32).to_be_bytes()),
            Err(WireError::BadLength { .. })
        ));
        assert!(matches!(
            decode(&2i32.to_be_bytes()),
            Err(WireError::BadLength { .. })
        ));
        let mut command = RemotingCommand::new_request(10);
        command.body = Bytes::from(vec![0u8; MAX_FRAME_BYTES]);
        let mut buf = BytesMut::from(&b"keep"[..]);
        assert!(matches!(
            encode(&command, &mut buf),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert_eq!(&buf[..], b"keep");
    }

    #[test]
    fn rejects_malformed_headers() {
        // Header length beyond the frame.
        let mut frame = 8i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&100i32.to_be_bytes());
        frame.extend_from_slice(b"{}{}");
        assert!(matches!(decode(&frame), Err(WireError::BadLength { .. })));
        // Unknown serialize type.
        let mut frame = 4i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&0x0500_0000i32.to_be_bytes());
        assert!(matches!(
            decode(&frame),
            Err(WireError::UnknownSerializeType(5))
        ));
        // JSON without a code.
        let header = br#"{"opaque":1}"#;
        let mut frame = ((4 + header.len()) as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&(header.len() as i32).to_be_bytes());
        frame.extend_from_slice(header);
        assert!(matches!(
            decode(&frame),
            Err(WireError::MissingField { field: "code" })
        ));
        // Binary header whose extFields entry overruns.
        let mut command =
            RemotingCommand::new_request(1).with_serialize_type(SerializeType::RocketMq);
        command.ext_fields.insert("key".into(), "value".into());
        let mut bytes = encoded(&command);
        let last = bytes.len() - 1;
        bytes[last - 8] = 0x7f; // value length high byte
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn binary_header_rejects_codes_beyond_i16() {
        let command =
            RemotingCommand::new_request(200_050).with_serialize_type(SerializeType::RocketMq);
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(&command, &mut buf),
            Err(WireError::Unencodable { what: "code", .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn language_codes_match_java() {
        assert_eq!(LanguageCode::Java.code(), 0);
        assert_eq!(LanguageCode::Go.code(), 9);
        assert_eq!(LanguageCode::Rust.code(), 12);
        assert_eq!(LanguageCode::NodeJs.code(), 13);
        assert_eq!(LanguageCode::from_code(200), LanguageCode::Other);
        assert_eq!(LanguageCode::from_name("RUST"), LanguageCode::Rust);
        assert_eq!(LanguageCode::from_name("COBOL"), LanguageCode::Other);
        for code in 0..14u8 {
            assert_eq!(LanguageCode::from_code(code).code(), code);
        }
    }
}
