//! Frames over a byte stream: [`FrameReader`] reads whole commands under the frame cap,
//! [`FrameWriter`] writes them. Both halves of a `TcpStream` (or any async stream).
//!
//! A malformed or oversized frame is a [`ConnectionError`]: the owner logs it and closes the
//! connection, because after a bad length the stream cannot be re-synchronised.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use raftmq_protocol::frame;
use raftmq_protocol::{RemotingCommand, WireError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

/// How much the read buffer grows per read while a frame is incomplete: a peer that announces
/// a 16 MiB frame and sends nothing costs this much, not 16 MiB.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Capacity of the write buffer that coalesces small frames into one syscall.
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// How long one frame write may take before the peer is considered stuck.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection can no longer be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The peer sent bytes that are not a valid frame (or one over the size cap).
    #[error("malformed frame: {0}")]
    Malformed(#[from] WireError),

    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes received)")]
    TruncatedFrame { buffered: usize },

    #[error("writing a frame took longer than {timeout_ms} ms")]
    WriteTimeout { timeout_ms: u64 },
}

/// Reads frames from a stream, buffering partial ones.
pub struct FrameReader<R> {
    inner: R,
    buffer: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
        }
    }

    /// The next command; `Ok(None)` when the peer closed the stream between frames.
    pub async fn read_frame(&mut self) -> Result<Option<RemotingCommand>, ConnectionError> {
        loop {
            if let Some(command) = frame::decode_from(&mut self.buffer)? {
                return Ok(Some(command));
            }
            // The announced length is checked against the cap before the buffer grows for it.
            let wanted = match frame::frame_length(&self.buffer)? {
                Some(full) => full.saturating_sub(self.buffer.len()),
                None => frame::LENGTH_FIELD_BYTES,
            };
            self.buffer.reserve(wanted.clamp(1, READ_CHUNK_BYTES));
            if self.inner.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::TruncatedFrame {
                        buffered: self.buffer.len(),
                    })
                };
            }
        }
    }
}

/// A command encoded for writing: the frame head, then the body as it is (no copy).
#[derive(Clone, Debug)]
pub struct EncodedFrame {
    head: Bytes,
    body: Bytes,
}

impl EncodedFrame {
    /// Encodes `command`; fails when it cannot be represented (too large, a code beyond i16 in
    /// a ROCKETMQ header).
    pub fn encode(command: &RemotingCommand) -> Result<Self, WireError> {
        let mut head = BytesMut::new();
        frame::encode_head(command, &mut head)?;
        Ok(EncodedFrame {
            head: head.freeze(),
            body: command.body.clone(),
        })
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes frames to a stream through a buffer; call [`FrameWriter::flush`] when no more frames
/// are waiting, so that a burst goes out in few syscalls.
pub struct FrameWriter<W: AsyncWrite> {
    inner: BufWriter<W>,
    write_timeout: Duration,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W, write_timeout: Duration) -> Self {
        FrameWriter {
            inner: BufWriter::with_capacity(WRITE_BUFFER_BYTES, inner),
            write_timeout,
        }
    }

    /// Buffers one frame (large bodies go straight to the stream).
    pub async fn write_encoded(&mut self, frame: &EncodedFrame) -> Result<(), ConnectionError> {
        let inner = &mut self.inner;
        timed(self.write_timeout, async {
            inner.write_all(&frame.head).await?;
            inner.write_all(&frame.body).await
        })
        .await
    }

    /// Encodes and buffers one command.
    pub async fn write_frame(&mut self, command: &RemotingCommand) -> Result<(), ConnectionError> {
        let frame = EncodedFrame::encode(command)?;
        self.write_encoded(&frame).await
    }

    /// Sends everything buffered.
    pub async fn flush(&mut self) -> Result<(), ConnectionError> {
        timed(self.write_timeout, self.inner.flush()).await
    }

    /// Closes the write side after flushing.
    pub async fn shutdown(&mut self) -> Result<(), ConnectionError> {
        self.flush().await?;
        Ok(self.inner.shutdown().await?)
    }
}

async fn timed(
    timeout: Duration,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<(), ConnectionError> {
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ConnectionError::WriteTimeout {
            timeout_ms: millis(timeout),
        }),
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftmq_protocol::SerializeType;

    fn command(opaque: i32, body_len: usize) -> RemotingCommand {
        let mut command = RemotingCommand::new_request(105).with_body(vec![7u8; body_len]);
        command.opaque = opaque;
        command.ext_fields.insert("topic".into(), "T".into());
        command
    }

    #[tokio::test]
    async fn frames_cross_a_stream_split_into_small_pieces() {
        let (client, server) = tokio::io::duplex(7); // tiny pipe: every frame arrives in pieces
        let mut writer = FrameWriter::new(client, WRITE_TIMEOUT);
        let mut reader = FrameReader::new(server);
        let sent = vec![
            command(1, 0),
            command(2, 100_000),
            command(3, 5).with_serialize_type(SerializeType::RocketMq),
        ];
        let expected = sent.clone();
        let write = tokio::spawn(async move {
            for command in &sent {
                writer.write_frame(command).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
        for want in expected {
            assert_eq!(reader.read_frame().await.unwrap().unwrap(), want);
        }
        assert!(reader.read_frame().await.unwrap().is_none());
        write.await.unwrap();
    }

    #[tokio::test]
    async fn oversized_frame_fails_before_its_bytes_arrive() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(server);
        client
            .write_all(&((frame::MAX_FRAME_BYTES + 1) as i32).to_be_bytes())
            .await
            .unwrap();
        let error = reader.read_frame().await.unwrap_err();
        assert!(
            matches!(
                error,
                ConnectionError::Malformed(WireError::FrameTooLarge { .. })
            ),
            "{error}"
        );
        assert!(reader.buffer.capacity() < frame::MAX_FRAME_BYTES);
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error_and_clean_close_is_not() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(server);
        client.write_all(&[0, 0, 0, 20, 0, 0]).await.unwrap();
        client.shutdown().await.unwrap();
        assert!(matches!(
            reader.read_frame().await,
            Err(ConnectionError::TruncatedFrame { buffered: 6 })
        ));

        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(
            FrameReader::new(server)
                .read_frame()
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn unencodable_command_is_refused_before_writing() {
        let (client, _server) = tokio::io::duplex(64);
        let mut writer = FrameWriter::new(client, WRITE_TIMEOUT);
        let too_big = command(1, frame::MAX_FRAME_BYTES);
        assert!(matches!(
            writer.write_frame(&too_big).await,
            Err(ConnectionError::Malformed(WireError::FrameTooLarge { .. }))
        ));
    }
}
