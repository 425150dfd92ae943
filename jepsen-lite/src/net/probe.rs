//! A tiny TCP echo server and a reachability probe, run inside namespaces by the self-test and
//! the tests (as hidden `jepsen-lite net-echo` / `net-probe` subcommands).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Connections the echo server serves at once; more are closed on accept.
pub const MAX_ECHO_CONNECTIONS: usize = 64;
/// Longest line the echo server or probe reads.
pub const MAX_PROBE_LINE_BYTES: u64 = 1024;
/// What the echo server prints on stdout once it listens (parents wait for this line).
pub const READY_LINE: &str = "jepsen-lite echo listening";
/// What a probe sends and expects back.
const PROBE_PAYLOAD: &str = "jepsen-lite probe\n";
/// An idle echo connection is closed after this long.
const ECHO_IDLE_TIMEOUT_MS: u64 = 30_000;

/// Listens on `addr`, prints [`READY_LINE`], and echoes lines until the process is killed.
pub fn serve_echo(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("{READY_LINE} {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_ECHO_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: closed
        }
        let active = active.clone();
        std::thread::spawn(move || {
            let _ = echo_lines(stream);
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

fn echo_lines(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(ECHO_IDLE_TIMEOUT_MS)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_PROBE_LINE_BYTES)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        writer.write_all(&line)?;
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no echo from {addr}: {source}")]
    Echo {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("wrong echo from {addr}: {got:?}")]
    Wrong { addr: SocketAddr, got: String },
}

/// Connects to an echo server and round-trips one line, all within `timeout`. Returns the
/// round-trip time.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<Duration, ProbeError> {
    let start = Instant::now();
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1));
    let echo = |source| ProbeError::Echo { addr, source };
    stream.set_read_timeout(Some(left)).map_err(echo)?;
    stream.set_write_timeout(Some(left)).map_err(echo)?;
    (&stream)
        .write_all(PROBE_PAYLOAD.as_bytes())
        .map_err(echo)?;
    let mut got = Vec::new();
    BufReader::new(&stream)
        .take(MAX_PROBE_LINE_BYTES)
        .read_until(b'\n', &mut got)
        .map_err(echo)?;
    if got != PROBE_PAYLOAD.as_bytes() {
        return Err(ProbeError::Wrong {
            addr,
            got: String::from_utf8_lossy(&got).into_owned(),
        });
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trips_through_the_echo_server_and_fails_fast_without_one() {
        // Serve on an ephemeral port in a thread; learn the port from a listener we bind first.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(1) {
                let _ = echo_lines(stream.unwrap());
            }
        });
        let rtt = probe(addr, Duration::from_secs(5)).unwrap();
        assert!(rtt < Duration::from_secs(5));
        // Nothing listens there any more (the thread served its one connection): refused.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            probe(closed, Duration::from_millis(500)),
            Err(ProbeError::Connect { .. })
        ));
    }
}
