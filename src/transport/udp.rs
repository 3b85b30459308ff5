//! Plain CoAP over UDP: a [`Link`] over one socket. The datagram carries no
//! identity, so routes that need one refuse it.

use super::Link;
use crate::coap::exchange::Peer;
use std::io;
use std::net::SocketAddr;

pub struct UdpLink {
    socket: tokio::net::UdpSocket,
    name: String,
}

impl UdpLink {
    pub async fn bind(addr: SocketAddr) -> io::Result<UdpLink> {
        let socket = super::bind_udp(addr)?;
        let name = format!("udp {}", socket.local_addr()?);
        Ok(UdpLink { socket, name })
    }
}

impl Link for UdpLink {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, Peer)> {
        let (len, addr) = self.socket.recv_from(buf).await?;
        Ok((
            len,
            Peer {
                addr,
                identity: None,
            },
        ))
    }

    async fn send(&mut self, bytes: &[u8], to: &Peer) -> io::Result<()> {
        self.socket.send_to(bytes, to.addr).await.map(|_| ())
    }

    fn name(&self) -> &str {
        &self.name
    }
}
