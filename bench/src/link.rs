//! How a simulated device reaches the daemon: the seam between the load
//! generator's exchanges and the wire.
//!
//! A [`Link`] carries whole CoAP datagrams to one server and back. Plain UDP
//! is one connected socket per device, so the daemon sees one peer per
//! device, as it would in the field. DTLS-PSK will be one
//! `webrtc_dtls::conn::DTLSConn` client per device (identity and key per
//! device, one session each) behind the same trait; [`Transport::Dtls`]
//! holds its settings and the bench driver already reports its rows as "not
//! yet measured" until the daemon's DTLS transport lands.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
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

/// The DTLS-PSK device link. Not built yet: the daemon's DTLS transport is
/// in progress. The plan: `webrtc-dtls = "=0.12.0"`, a `DTLSConn::new`
/// client per device over its own connected UDP socket, PSK callback
/// returning the device's key, `psk_identity_hint` = its identity, cipher
/// suite `TLS_PSK_WITH_AES_128_GCM_SHA256` set explicitly (the CBC suite's
/// reader panics on a short record, see DESIGN.md), and the handshake time
/// recorded so the driver can report handshakes per second.
pub fn dtls_unavailable() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "DTLS-PSK devices are not implemented yet (they land with the daemon's DTLS transport)",
    )
}
