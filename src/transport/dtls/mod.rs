//! CoAP over DTLS 1.2 (RFC 7252 §9) on webrtc-dtls 0.12, with our own
//! demultiplexer.
//!
//! Per listen address: one UDP socket read by the demultiplexer
//! (`demux.rs`), which looks at every datagram first (`prefilter.rs`) and
//! hands it to its peer's session task (`session.rs`), which drives
//! webrtc-dtls over a virtual connection (`vconn.rs`) with the credentials
//! chosen from the ClientHello (`credentials.rs`). Decrypted datagrams, with
//! the device's identity, go through a [`DtlsLink`] to the same
//! [`Server`](super::server::Server) as plain UDP; answers go back through
//! the session.
//!
//! Known limitations of webrtc-dtls 0.12 (see docs/ARCHITECTURE.md): a
//! spoofed record of the next epoch with bad ciphertext, sent to a PSK
//! session during its handshake's last flight, can end that session; and a
//! spoofed ClientHello from a device's address replaces its session. The
//! device then handshakes again.

mod credentials;
mod demux;
mod outcomes;
mod prefilter;
mod session;
mod vconn;

pub use credentials::Credentials;
pub use demux::Limits;

use super::Link;
use crate::coap::exchange::Peer;
use crate::config::psk::{self, PskKeys};
use crate::config::DtlsConfig;
use anyhow::Context;
use demux::{Demux, Peers};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Decrypted datagrams waiting for the CoAP server of one listener.
const INBOUND: usize = 1024;

/// Whether the demultiplexer lets a datagram from the network reach
/// webrtc-dtls's parsers. Public for the `dtls_records` fuzz target, which
/// checks that whatever passes cannot panic them.
#[doc(hidden)]
pub fn passes_prefilter(datagram: &[u8]) -> bool {
    prefilter::inspect(datagram).is_some()
}

/// DTLS as configured: credentials and limits shared by every listener,
/// and the PSK keys, which SIGHUP reloads.
pub struct Dtls {
    credentials: Credentials,
    limits: Limits,
    psk_file: Option<PathBuf>,
    keys: watch::Sender<Arc<PskKeys>>,
}

impl Dtls {
    /// Reads the PSK file and the certificates; refuses a PSK file others
    /// can read.
    pub fn new(config: &DtlsConfig) -> anyhow::Result<Dtls> {
        let keys = match &config.psk_file {
            Some(path) => read_keys(path)?,
            None => PskKeys::default(),
        };
        let (keys_tx, keys_rx) = watch::channel(Arc::new(keys));
        let certificate_suites = config.certificate_suites();
        let credentials = Credentials::new(
            keys_rx,
            &config.psk_suites(),
            config
                .certificate
                .as_ref()
                .map(|files| (files, &certificate_suites[..])),
        )?;
        Ok(Dtls {
            credentials,
            limits: Limits {
                max_sessions: config.max_sessions,
                max_handshakes: config.max_handshakes,
                new_peers_per_s: config.new_peers_per_s,
                handshake_timeout: Duration::from_secs(config.handshake_timeout_s),
                idle_timeout: Duration::from_secs(config.idle_timeout_s),
            },
            psk_file: config.psk_file.clone(),
            keys: keys_tx,
        })
    }

    /// Binds `addr` and starts its demultiplexer; it runs until the link
    /// is dropped.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<DtlsLink> {
        let socket = Arc::new(super::bind_udp(addr)?);
        let name: Arc<str> = Arc::from(format!("dtls {}", socket.local_addr()?));
        let peers = Arc::new(Peers::default());
        let (inbound_tx, inbound) = mpsc::channel(INBOUND);
        let (stop, stopped) = oneshot::channel();
        let demux = Demux {
            socket,
            name: name.clone(),
            peers: peers.clone(),
            credentials: self.credentials.clone(),
            limits: self.limits.clone(),
            inbound: inbound_tx,
        };
        tokio::spawn(demux.run(stopped));
        Ok(DtlsLink {
            inbound,
            peers,
            name,
            _stop: stop,
        })
    }

    /// Reads the PSK file again. Sessions of identities that keep their
    /// key stay; the others are closed. A broken file is refused, logged,
    /// and the keys in force stay.
    pub fn reload_psk(&self) {
        let Some(path) = &self.psk_file else {
            return;
        };
        match read_keys(path) {
            Ok(keys) => {
                log::info!("reload: {} PSK identities in force", keys.len());
                self.keys.send_replace(Arc::new(keys));
            }
            Err(e) => {
                log::error!("reload: the PSK file is refused, the keys in force stay:\n{e:#}")
            }
        }
    }
}

fn read_keys(path: &std::path::Path) -> anyhow::Result<PskKeys> {
    let keys = psk::load(path).with_context(|| format!("dtls.psk_file {}", path.display()))?;
    match &keys {
        Some(keys) if keys.is_empty() => log::warn!(
            "dtls: {} holds no keys yet: no device can connect with a PSK",
            path.display()
        ),
        Some(_) => {}
        None => log::warn!(
            "dtls: {} does not exist: no device can connect with a PSK until one is added \
             with `coap2mqtt psk add IDENTITY --psk-file {}` and the daemon gets SIGHUP",
            path.display(),
            path.display()
        ),
    }
    Ok(keys.unwrap_or_default())
}

/// The decrypted side of one DTLS listener, for its CoAP server. Dropping
/// it stops the listener and ends its sessions.
pub struct DtlsLink {
    inbound: mpsc::Receiver<(Peer, Vec<u8>)>,
    peers: Arc<Peers>,
    name: Arc<str>,
    _stop: oneshot::Sender<()>,
}

impl Link for DtlsLink {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, Peer)> {
        // The demultiplexer holds a sender as long as this link lives.
        let Some((peer, datagram)) = self.inbound.recv().await else {
            return std::future::pending().await;
        };
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok((n, peer))
    }

    async fn send(&self, bytes: &[u8], to: &Peer) -> io::Result<()> {
        let outbox = self
            .peers
            .outbox(to)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "its session has ended"))?;
        outbox
            .try_send(bytes.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "its session is not keeping up"))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn handshakes(&self) -> Vec<(&'static str, u64)> {
        self.peers.outcomes.totals()
    }

    fn tables(&self) -> Vec<(&'static str, u64)> {
        let (peers, handshaking) = self.peers.counts();
        vec![
            ("dtls_peers", peers as u64),
            ("dtls_handshaking", handshaking as u64),
        ]
    }
}
