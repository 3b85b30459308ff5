//! How a simulated device reaches the daemon: the seam between the load
//! generator's exchanges and the wire.
//!
//! A [`Link`] carries whole CoAP datagrams to one server and back. Plain UDP
//! is one connected socket per device, so the daemon sees one peer per
//! device, as it would in the field. DTLS-PSK is one
//! `webrtc_dtls::conn::DTLSConn` client per device (identity and key per
//! device, one session each) behind the same trait.

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

/// A DTLS-PSK device: its own connected UDP socket and one
/// `webrtc_dtls` client session, identity and key of its own, with the CoAP
/// mandatory suite TLS_PSK_WITH_AES_128_CCM_8 (what the smallest devices
/// speak). The handshake happens in [`DtlsLink::connect`].
pub struct DtlsLink {
    conn: webrtc_dtls::conn::DTLSConn,
}

impl DtlsLink {
    pub async fn connect(server: SocketAddr, identity: &str, key: &[u8]) -> io::Result<DtlsLink> {
        use webrtc_dtls::cipher_suite::CipherSuiteId;
        use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
        let UdpLink { socket } = UdpLink::connect(server).await?;
        let key = key.to_vec();
        let config = Config {
            psk: Some(std::sync::Arc::new(move |_hint: &[u8]| Ok(key.clone()))),
            // On a client this is the identity it sends.
            psk_identity_hint: Some(identity.as_bytes().to_vec()),
            cipher_suites: vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8],
            extended_master_secret: ExtendedMasterSecretType::Request,
            ..Default::default()
        };
        let conn =
            webrtc_dtls::conn::DTLSConn::new(std::sync::Arc::new(socket), config, true, None)
                .await
                .map_err(|e| io::Error::other(format!("DTLS handshake as {identity}: {e}")))?;
        Ok(DtlsLink { conn })
    }
}

impl Link for DtlsLink {
    async fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        use webrtc_util::Conn;
        self.conn
            .send(datagram)
            .await
            .map(|_| ())
            .map_err(|e| io::Error::other(e.to_string()))
    }

    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use webrtc_util::Conn;
        self.conn
            .recv(buf)
            .await
            .map_err(|e| io::Error::other(e.to_string()))
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
