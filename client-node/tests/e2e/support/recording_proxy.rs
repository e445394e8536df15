//! A TCP proxy on 127.0.0.1 that relays every connection to its target and
//! records every byte in both directions, for tests that prove what never
//! crosses the wire.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes seen by the proxy, per direction.
#[derive(Default)]
pub struct Capture {
    /// Bytes from nodes to the coordinator.
    pub node_to_coordinator: Vec<u8>,
    /// Bytes from the coordinator to nodes.
    pub coordinator_to_node: Vec<u8>,
}

/// Accepts connections on `listener` and relays each to `target`, recording every byte.
pub async fn recording_proxy(listener: TcpListener, target: String, capture: Arc<Mutex<Capture>>) {
    while let Ok((inbound, _)) = listener.accept().await {
        let target = target.clone();
        let capture = Arc::clone(&capture);
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(&target).await else {
                return;
            };
            let (inbound_read, inbound_write) = inbound.into_split();
            let (outbound_read, outbound_write) = outbound.into_split();
            let upstream = relay(inbound_read, outbound_write, Arc::clone(&capture), true);
            let downstream = relay(outbound_read, inbound_write, capture, false);
            tokio::join!(upstream, downstream);
        });
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    capture: Arc<Mutex<Capture>>,
    node_to_coordinator: bool,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if let Ok(mut capture) = capture.lock() {
            let sink = if node_to_coordinator {
                &mut capture.node_to_coordinator
            } else {
                &mut capture.coordinator_to_node
            };
            sink.extend_from_slice(&buffer[..read]);
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
