//! One peer's side of the shared UDP socket, as the `Conn` webrtc-dtls
//! drives: datagrams come in through a bounded channel the demultiplexer
//! fills, and go out through the shared socket to the peer's address.

use async_trait::async_trait;
use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};
use webrtc_util::conn::Conn;

type Result<T> = std::result::Result<T, webrtc_util::Error>;

pub(super) struct VirtualConn {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    remote: SocketAddr,
    inbox: Mutex<mpsc::Receiver<Vec<u8>>>,
}

impl VirtualConn {
    pub fn new(
        socket: Arc<UdpSocket>,
        local: SocketAddr,
        remote: SocketAddr,
        inbox: mpsc::Receiver<Vec<u8>>,
    ) -> VirtualConn {
        VirtualConn {
            socket,
            local,
            remote,
            inbox: Mutex::new(inbox),
        }
    }
}

#[async_trait]
impl Conn for VirtualConn {
    async fn connect(&self, _addr: SocketAddr) -> Result<()> {
        Err(webrtc_util::Error::Other(
            "a server-side peer does not connect".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        let next = self.inbox.lock().await.recv().await;
        match next {
            Some(datagram) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(n)
            }
            // The demultiplexer forgot this peer. An error here would make
            // webrtc-dtls's reader task retry in a busy loop (it stops only
            // on a fatal alert or when the DTLSConn is closed), so wait
            // instead: the session task drops the DTLSConn, which ends it.
            None => std::future::pending().await,
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        let n = self.recv(buf).await?;
        Ok((n, self.remote))
    }

    async fn send(&self, buf: &[u8]) -> Result<usize> {
        Ok(self.socket.send_to(buf, self.remote).await?)
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> Result<usize> {
        // Only ever this peer, whatever the library asks.
        Ok(self.socket.send_to(buf, self.remote).await?)
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.remote)
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
}
