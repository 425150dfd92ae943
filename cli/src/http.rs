//! A minimal HTTP/1.1 client for the brokers' admin endpoints (JSON in, JSON out, loopback):
//! one request per connection (`Connection: close`), bounded in time and size. Enough for
//! axum's answers (Content-Length or chunked); not a general HTTP client.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest admin answer read.
pub const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// Default deadline of one admin call.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET http://addr/path`, decoding a JSON answer.
pub async fn get_json<T: DeserializeOwned>(addr: &str, path: &str) -> anyhow::Result<T> {
    let body = call(addr, "GET", path, None, ADMIN_TIMEOUT).await?;
    serde_json::from_str(&body).with_context(|| format!("GET {path} on {addr}: unreadable answer"))
}

/// `POST http://addr/path` with a JSON body, decoding a JSON answer.
pub async fn post_json<B: Serialize, T: DeserializeOwned>(
    addr: &str,
    path: &str,
    body: &B,
    timeout: Duration,
) -> anyhow::Result<T> {
    let body = serde_json::to_string(body)?;
    let answer = call(addr, "POST", path, Some(&body), timeout).await?;
    serde_json::from_str(&answer)
        .with_context(|| format!("POST {path} on {addr}: unreadable answer"))
}

/// One request; a non-2xx status is an error carrying the `{"error": ...}` message.
async fn call(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to admin HTTP at {addr}"))?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path} on {addr}: no answer within {timeout:?}"))??;
    let (status, body) =
        parse_response(&raw).with_context(|| format!("{method} {path} on {addr}"))?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| value.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        bail!("{method} {path} on {addr}: HTTP {status}: {message}");
    }
    Ok(body)
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of HTTP headers"))?;
    let head = std::str::from_utf8(&raw[..split]).context("HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((
        status,
        String::from_utf8(body).context("HTTP body is not UTF-8")?,
    ))
}

fn dechunk(mut raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk header"))?;
        let size_text = std::str::from_utf8(&raw[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = raw.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        body.extend_from_slice(chunk);
        raw = raw
            .get(size + 2..)
            .ok_or_else(|| anyhow!("truncated chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, "{}".to_owned()));
        let chunked =
            b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (409, "abcde".to_owned()));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }
}
