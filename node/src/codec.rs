//! Raw-bytes request-response codec shared by `/agentnet/sync/1` and `/agentnet/intent/1`:
//! the writer closes its side after the message, so a message is everything up to the end
//! of the stream, and the reader stops one byte past its bound.
//!
//! An oversized *request* is passed on cut at its bound plus one byte, not failed:
//! request-response drops failed inbound reads without telling the behaviour, and the node
//! must see the oversized request to refuse it and penalise its sender (the decoders check
//! every size). An oversized response fails the read.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;

/// One message per stream direction, each at most its bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BytesCodec {
    max_request: usize,
    max_response: usize,
}

impl BytesCodec {
    pub(crate) fn new(max_request: usize, max_response: usize) -> Self {
        BytesCodec {
            max_request,
            max_response,
        }
    }
}

/// The error a reader gives for a response over its bound.
const OVERSIZED_MESSAGE: &str = "message larger than the protocol allows";

/// Reads at most `max + 1` bytes: a message over `max` comes back one byte too long.
async fn read_capped<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    if buf.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the peer closed the stream without a message",
        ));
    }
    Ok(buf)
}

async fn read_bounded<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let buf = read_capped(io, max).await?;
    if buf.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            OVERSIZED_MESSAGE,
        ));
    }
    Ok(buf)
}

async fn write_all<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: Vec<u8>,
) -> std::io::Result<()> {
    io.write_all(&bytes).await?;
    io.close().await
}

impl Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_capped(io, self.max_request).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_bounded(io, self.max_response).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        write_all(io, req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()> {
        write_all(io, res).await
    }
}
