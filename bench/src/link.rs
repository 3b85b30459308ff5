//! How a simulated device reaches the daemon: the seam between the load
//! generator's exchanges and the wire.
//!
//! A [`Link`] carries whole CoAP datagrams to one server and back. Plain UDP
//! is one connected socket per device, so the daemon sees one peer per
//! device, as it would in the field. DTLS-PSK is one sans-IO rtc-dtls
//! client per device (identity and key per device, one session each) behind
//! the same trait.

use bytes::BytesMut;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_shared::TransportProtocol;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// One device's datagram pipe to the server.
pub trait Link: Send + 'static {
    fn send(&mut self, datagram: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// The next datagram from the server into `buf`; its length.
    fn recv(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
}

/// How devices talk to the server.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transport {
    Udp,
    /// Device `i` uses identity `{identity_prefix}{i}` and `key` (hex).
    Dtls {
        identity_prefix: String,
        key_hex: String,
    },
}

/// Plain CoAP: a UDP socket connected to the server.
pub struct UdpLink {
    socket: UdpSocket,
}

impl UdpLink {
    pub async fn connect(server: SocketAddr) -> io::Result<UdpLink> {
        let bind: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse().expect("literal address")
        } else {
            "[::1]:0".parse().expect("literal address")
        };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(server).await?;
        Ok(UdpLink { socket })
    }
}

impl Link for UdpLink {
    async fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        self.socket.send(datagram).await.map(|_| ())
    }

    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.recv(buf).await
    }
}

/// A DTLS-PSK device: its own connected UDP socket and one rtc-dtls client
/// connection, identity and key of its own, with the CoAP mandatory suite
/// TLS_PSK_WITH_AES_128_CCM_8 (what the smallest devices speak). The
/// handshake happens in [`DtlsLink::connect`].
///
/// The client is driven sans-IO (bytes and time in, datagrams out), as the
/// daemon drives its server side, so a device costs the load generator no
/// tasks or channels of its own: on this 2-core machine the load generator
/// shares the CPU with the daemon and the broker, and what it spends is
/// taken from them. Until 2026-12-06 the devices were webrtc-dtls 0.12 clients
/// (two tasks and six channels a connection): 12.5 µs of the load
/// generator's CPU per message against 7.4 µs for plain UDP. Interop with
/// other DTLS stacks is what tests/dtls.rs proves (libcoap's OpenSSL and
/// GnuTLS clients, tinydtls), not the bench.
pub struct DtlsLink {
    socket: UdpSocket,
    endpoint: Endpoint,
    server: SocketAddr,
    /// Decrypted datagrams read but not yet handed out.
    arrived: VecDeque<BytesMut>,
    wire: Box<[u8; 2048]>,
}

/// How long a handshake may take, retransmissions included.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

impl DtlsLink {
    pub async fn connect(server: SocketAddr, identity: &str, key: &[u8]) -> io::Result<DtlsLink> {
        use rtc_dtls::cipher_suite::CipherSuiteId;
        use rtc_dtls::config::{ConfigBuilder, ExtendedMasterSecretType};
        use rtc_dtls::crypto_provider::providers::RingProvider;
        let failed = |e: &dyn std::fmt::Display| {
            io::Error::other(format!("DTLS handshake as {identity}: {e}"))
        };
        let UdpLink { socket } = UdpLink::connect(server).await?;
        let key = key.to_vec();
        let config = ConfigBuilder::default()
            .with_crypto_provider(Arc::new(RingProvider::new()))
            .with_psk(Some(Arc::new(move |_hint: &[u8]| Ok(key.clone()))))
            // On a client this is the identity it sends.
            .with_psk_identity_hint(Some(identity.as_bytes().to_vec()))
            .with_cipher_suites(vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8])
            .with_extended_master_secret(ExtendedMasterSecretType::Request)
            .build(true, Some(server))
            .map_err(|e| failed(&e))?;
        let mut link = DtlsLink {
            endpoint: Endpoint::new(socket.local_addr()?, TransportProtocol::UDP, None),
            socket,
            server,
            arrived: VecDeque::new(),
            wire: Box::new([0; 2048]),
        };
        let started = Instant::now();
        link.endpoint
            .connect(started, server, Arc::new(config), None)
            .map_err(|e| failed(&e))?;
        loop {
            link.flush().await?;
            let now = Instant::now();
            if now.duration_since(started) > HANDSHAKE_TIMEOUT {
                return Err(failed(&"timed out"));
            }
            let wake = link
                .endpoint
                .poll_timeout(&server)
                .unwrap_or(now + Duration::from_secs(1))
                .min(started + HANDSHAKE_TIMEOUT);
            match tokio::time::timeout_at(wake.into(), link.socket.recv(&mut link.wire[..])).await {
                // A listener not yet up answers with ICMP port
                // unreachable: retransmit, as devices do, until it is.
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(received) => {
                    let n = received?;
                    let events = link
                        .endpoint
                        .read(
                            Instant::now(),
                            server,
                            None,
                            BytesMut::from(&link.wire[..n]),
                        )
                        .map_err(|e| failed(&e))?;
                    let mut done = false;
                    for event in events {
                        match event {
                            EndpointEvent::HandshakeComplete => done = true,
                            EndpointEvent::ApplicationData(data) => link.arrived.push_back(data),
                            EndpointEvent::PeerClosed => return Err(failed(&"the server closed")),
                            _ => {}
                        }
                    }
                    if done {
                        link.flush().await?;
                        return Ok(link);
                    }
                }
                Err(_) => link
                    .endpoint
                    .handle_timeout(server, Instant::now())
                    .map_err(|e| failed(&e))?,
            }
        }
    }

    /// Sends what the connection has queued.
    async fn flush(&mut self) -> io::Result<()> {
        while let Some(transmit) = self.endpoint.poll_transmit() {
            self.socket.send(&transmit.message).await?;
        }
        Ok(())
    }
}

impl Link for DtlsLink {
    async fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        self.endpoint
            .write(Instant::now(), self.server, datagram)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.flush().await
    }

    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(data) = self.arrived.pop_front() {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                return Ok(n);
            }
            let n = self.socket.recv(&mut self.wire[..]).await?;
            let read = self.endpoint.read(
                Instant::now(),
                self.server,
                None,
                BytesMut::from(&self.wire[..n]),
            );
            // An alert or retransmission the connection answers goes out
            // whatever the read's outcome.
            self.flush().await?;
            for event in read.map_err(|e| io::Error::other(e.to_string()))? {
                match event {
                    EndpointEvent::ApplicationData(data) => self.arrived.push_back(data),
                    EndpointEvent::PeerClosed => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the server closed the DTLS session",
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Either kind of device link, so one load run holds one type.
pub enum AnyLink {
    Udp(UdpLink),
    Dtls(Box<DtlsLink>),
}

impl Link for AnyLink {
    async fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        match self {
            AnyLink::Udp(l) => l.send(datagram).await,
            AnyLink::Dtls(l) => l.send(datagram).await,
        }
    }

    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            AnyLink::Udp(l) => l.recv(buf).await,
            AnyLink::Dtls(l) => l.recv(buf).await,
        }
    }
}
