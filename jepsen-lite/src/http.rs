//! A minimal HTTP/1.1 client for the members' admin endpoints (`GET /raft`, `POST
//! /raft/change-membership`, ...): one request per connection (`Connection: close`), JSON
//! bodies, a deadline on the whole exchange and a cap on the response size. Pulling in a full
//! HTTP client for four endpoints on loopback-like networks is not worth its dependencies.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest admin response read (a `/raft` status is a few hundred bytes).
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// Errors of one admin HTTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} http://{addr}{path}: no answer within {timeout_ms} ms")]
    Timeout {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        timeout_ms: u64,
    },
    #[error("{method} http://{addr}{path}: {source}")]
    Io {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        source: std::io::Error,
    },
    #[error("{method} http://{addr}{path}: malformed response: {reason}")]
    Malformed {
        method: &'static str,
        addr: SocketAddr,
        path: String,
        reason: String,
    },
}

/// A response: status and body text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `GET http://addr/path`.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    request("GET", addr, path, None, timeout).await
}

/// `POST http://addr/path` with a JSON body.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<Response, HttpError> {
    request("POST", addr, path, Some(body.to_string()), timeout).await
}

async fn request(
    method: &'static str,
    addr: SocketAddr,
    path: &str,
    body: Option<String>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let exchange = async {
        let io = |source| HttpError::Io {
            method,
            addr,
            path: path.to_string(),
            source,
        };
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if let Some(body) = &body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        if let Some(body) = &body {
            stream.write_all(body.as_bytes()).await.map_err(io)?;
        }
        // Read until the response is complete (by its length) or the server closes.
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.len() as u64 > MAX_RESPONSE_BYTES {
                return Err(HttpError::Malformed {
                    method,
                    addr,
                    path: path.to_string(),
                    reason: format!("response longer than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            if is_complete(&raw) {
                break;
            }
        }
        parse_response(&raw).map_err(|reason| HttpError::Malformed {
            method,
            addr,
            path: path.to_string(),
            reason,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            method,
            addr,
            path: path.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })?
}

/// Whether `raw` holds a whole response whose length is known from its headers.
fn is_complete(raw: &[u8]) -> bool {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let length = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match length {
        Some(n) => raw.len() >= split + 4 + n,
        None if head.contains("transfer-encoding: chunked") => raw.ends_with(b"0\r\n\r\n"),
        None => false,
    }
}

/// Parses a whole `Connection: close` response (content-length, chunked or to-EOF body).
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name == "content-length" {
            length = value.parse().ok();
        }
    }
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("body shorter than content-length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8(body).map_err(|_| "body is not UTF-8")?,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    // Each round consumes at least the chunk header's CRLF, so this ends.
    loop {
        let end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_text = std::str::from_utf8(&raw[..end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(raw.get(..size).ok_or("truncated chunk")?);
        raw = raw.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn parses_length_chunked_and_eof_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{}"));
        let r = parse_response(
            b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (409, "abcde"));
        assert!(!r.is_success());
        assert!(is_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        ));
        assert!(!is_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n{}"
        ));
        assert!(!is_complete(b"HTTP/1.1 200 OK\r\n\r\nto the end"));
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\nto the end").unwrap();
        assert_eq!(r.body, "to the end");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
    }

    #[tokio::test]
    async fn posts_json_and_times_out_on_a_silent_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            // Read until the 9-byte body has arrived after the headers.
            for _ in 0..100 {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"{\"a\":1}") {
                    break;
                }
            }
            let text = String::from_utf8(got).unwrap();
            assert!(text.starts_with("POST /x HTTP/1.1\r\n"), "{text}");
            assert!(text.contains("Content-Length: 7"), "{text}");
            // The connection stays open: the client must stop at content-length.
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone")
                .await
                .unwrap();
            // A second connection that never answers.
            let (_silent, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let r = post_json(
            addr,
            "/x",
            &serde_json::json!({"a": 1}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.body, "done");
        let err = get(addr, "/slow", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Timeout { .. }), "{err}");
        server.abort();
    }
}
