//! A delaying TCP relay: latency injection for the testnet.
//!
//! Each node gets a relay on 127.0.0.1 that forwards every connection to the node's real
//! TCP listener, holding each chunk of bytes for a fixed delay in each direction. The
//! harness dials relays instead of nodes, so every connection it makes carries the delay
//! (one-way; a round trip pays it twice). Bytes are never reordered, dropped or merged
//! across connections: noise and yamux above see a slow, faithful link.
//!
//! Connections the nodes open on their own (Kademlia dialling an address learnt through
//! identify) go straight to the real listener and carry no delay.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks in flight per direction of one connection; a full queue slows the reader,
/// as a full link would.
const CHUNKS_IN_FLIGHT: usize = 1024;
/// The largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// Connections relayed at once per relay.
const MAX_CONNECTIONS: usize = 512;

/// A relay in front of one node. Dropping it stops it and cuts its connections.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts a relay on 127.0.0.1 that forwards to `target` with `delay` each way.
    pub async fn start(target: SocketAddr, delay: Duration) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else { continue };
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            // Over the bound: refuse by closing.
                            drop(inbound);
                            continue;
                        };
                        connections.spawn(async move {
                            let _permit = permit;
                            if let Ok(outbound) = TcpStream::connect(target).await {
                                relay(inbound, outbound, delay).await;
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Relay { addr, task })
    }

    /// Where to dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

/// Relays both directions until either side closes.
async fn relay(inbound: TcpStream, outbound: TcpStream, delay: Duration) {
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        _ = one_way(in_read, out_write, delay) => {}
        _ = one_way(out_read, in_write, delay) => {}
    }
}

/// Reads chunks from `from` and writes each to `to` once `delay` has passed since it was
/// read.
async fn one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    // The writer drains what the reader queued before the reader's end closes the channel.
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_in_order_and_late() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = server.local_addr().expect("addr");
        let echo = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.expect("accept");
            let mut buf = vec![0u8; 1000];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("write");
        });
        let relay = Relay::start(target, Duration::from_millis(40))
            .await
            .expect("relay");
        let mut c = TcpStream::connect(relay.addr()).await.expect("connect");
        let sent: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let started = std::time::Instant::now();
        c.write_all(&sent).await.expect("write");
        let mut got = vec![0u8; 1000];
        c.read_exact(&mut got).await.expect("read");
        let rtt = started.elapsed();
        assert_eq!(got, sent);
        assert!(rtt >= Duration::from_millis(80), "two delays: {rtt:?}");
        assert!(rtt < Duration::from_secs(2), "{rtt:?}");
        echo.await.expect("echo");
    }
}
