//! Plain CoAP over UDP: a [`Link`] over one socket. The datagram carries no
//! identity, so routes that need one refuse it. The answers of a commit
//! leave in batches (see `batch.rs`).

use super::{batch, Link};
use crate::coap::exchange::Peer;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use tokio::io::Interest;

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

    async fn send_all(&mut self, datagrams: &[(Vec<u8>, Peer)]) -> Vec<(usize, io::Error)> {
        let mut failed = Vec::new();
        let mut next = 0;
        while next < datagrams.len() {
            let fd = self.socket.as_raw_fd();
            let rest = &datagrams[next..];
            let each = rest.iter().map(|(bytes, to)| (&bytes[..], to.addr));
            match self
                .socket
                .try_io(Interest::WRITABLE, || batch::send(fd, each))
            {
                Ok(sent) => next += sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.socket.writable().await {
                        failed.extend(
                            (next..datagrams.len())
                                .map(|i| (i, io::Error::new(e.kind(), e.to_string()))),
                        );
                        break;
                    }
                }
                // The kernel reports a datagram's error when it is the
                // first of a call: that one failed, the rest go on.
                Err(e) => {
                    failed.push((next, e));
                    next += 1;
                }
            }
        }
        failed
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peer(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            identity: None,
        }
    }

    #[tokio::test]
    async fn a_batch_larger_than_one_call_reaches_every_peer_in_order() {
        let mut link = UdpLink::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut devices = Vec::new();
        for _ in 0..3 {
            devices.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        // Three calls' worth, the peers interleaved.
        let total = 2 * batch::SEND_BATCH + 7;
        let datagrams: Vec<(Vec<u8>, Peer)> = (0..total)
            .map(|i| {
                let to = devices[i % 3].local_addr().unwrap();
                ((i as u32).to_be_bytes().to_vec(), peer(to))
            })
            .collect();
        assert!(link.send_all(&datagrams).await.is_empty());
        for (d, device) in devices.iter().enumerate() {
            let mut buf = [0u8; 16];
            for i in (d..total).step_by(3) {
                let n = tokio::time::timeout(Duration::from_secs(5), device.recv(&mut buf))
                    .await
                    .expect("every datagram arrives")
                    .unwrap();
                assert_eq!(&buf[..n], &(i as u32).to_be_bytes()[..]);
            }
        }
    }

    #[tokio::test]
    async fn a_datagram_the_kernel_refuses_fails_alone() {
        let mut link = UdpLink::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let device = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = device.local_addr().unwrap();
        // An IPv6 destination from an IPv4 socket: refused by the kernel.
        let elsewhere: SocketAddr = "[::1]:5683".parse().unwrap();
        let datagrams = vec![
            (b"one".to_vec(), peer(to)),
            (b"lost".to_vec(), peer(elsewhere)),
            (b"two".to_vec(), peer(to)),
        ];
        let failed = link.send_all(&datagrams).await;
        assert_eq!(failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
        let mut buf = [0u8; 16];
        for want in [&b"one"[..], b"two"] {
            let n = tokio::time::timeout(Duration::from_secs(5), device.recv(&mut buf))
                .await
                .expect("the others arrive")
                .unwrap();
            assert_eq!(&buf[..n], want);
        }
    }
}
