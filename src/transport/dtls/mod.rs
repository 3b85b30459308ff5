//! CoAP over DTLS 1.2 (RFC 7252 §9) on rtc-dtls, the sans-IO DTLS of
//! webrtc-rs, with our own demultiplexer and stateless cookie exchange.
//!
//! Per listen address: one UDP socket and one [`DtlsLink`], driven by the
//! listener's CoAP [`Server`](super::server::Server) task like plain UDP is:
//! it reads datagrams, and the link runs them through a sans-IO
//! [`Listener`](listener::Listener) (prefilter, cookie, table, sessions,
//! rtc-dtls) on that task and hands back decrypted CoAP messages with the
//! device's identity; answers are encrypted and sent on the same call;
//! retransmissions and timeouts run when the server calls
//! [`Link::handle_timeout`] at the link's [`Link::poll_timeout`]. No task or
//! channel per session: an idle session is its rtc-dtls connection and a
//! few fields (see docs/ARCHITECTURE.md for the measured size).
//!
//! Files: `prefilter.rs` (what may be parsed at all), `cookie.rs` (the
//! stateless HelloVerifyRequest), `handoff.rs` (starting an rtc-dtls
//! connection from a hello that returned our cookie), `demux.rs` (the
//! bounded table of sessions and their timers), `session.rs` (one rtc-dtls
//! connection), `listener.rs` (all of it as one state machine),
//! `credentials.rs` and `private_key.rs` (PSK and certificate config),
//! `outcomes.rs` (handshake counters for /metrics).

mod cookie;
mod credentials;
mod demux;
mod handoff;
mod listener;
mod outcomes;
mod prefilter;
mod private_key;
mod session;

pub use credentials::Credentials;
pub use demux::Limits;

use super::{batch, Link};
use crate::coap::exchange::Peer;
use crate::config::psk::{self, PskKeys};
use crate::config::DtlsConfig;
use anyhow::Context;
use bytes::BytesMut;
use listener::Listener;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Whether the listener lets a datagram from the network reach rtc-dtls's
/// parsers. Public for the `dtls_records` fuzz target, which checks that
/// whatever passes cannot panic them.
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

    /// Binds `addr`: a listener that works as its server drives it.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<DtlsLink> {
        let socket = super::bind_udp(addr)?;
        let local = socket.local_addr()?;
        let sender = dup_for_sending(&socket)?;
        let name: Arc<str> = Arc::from(format!("dtls {local}"));
        let now = Instant::now();
        let mut keys = self.keys.subscribe();
        let current = keys.borrow_and_update().clone();
        let listener = Listener::new(
            name.clone(),
            local,
            self.credentials.clone(),
            cookie::CookieJar::from_os(now),
            self.limits.clone(),
            current,
            now,
        );
        Ok(DtlsLink {
            socket,
            sender,
            listener,
            keys,
            name,
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            outgoing: Vec::new(),
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

/// A second handle on the socket, to send from synchronous code: a
/// datagram goes out at once or (buffer full) is dropped, as UDP may; DTLS
/// and CoAP retransmit.
fn dup_for_sending(socket: &tokio::net::UdpSocket) -> io::Result<std::net::UdpSocket> {
    use std::os::fd::AsFd;
    let fd = socket.as_fd().try_clone_to_owned()?;
    Ok(std::net::UdpSocket::from(fd))
}

/// One DTLS listener, as its CoAP server drives it. Dropping it closes
/// every session (close_notify to the established ones).
pub struct DtlsLink {
    socket: tokio::net::UdpSocket,
    sender: std::net::UdpSocket,
    listener: Listener,
    keys: watch::Receiver<Arc<PskKeys>>,
    name: Arc<str>,
    buf: Box<[u8]>,
    /// The datagrams of one flush (kept for its allocation).
    outgoing: Vec<(SocketAddr, BytesMut)>,
}

impl DtlsLink {
    /// Sends what the listener has to send, in batches (see `batch.rs`).
    fn flush(&mut self) {
        self.outgoing.clear();
        while let Some(transmit) = self.listener.poll_transmit() {
            self.outgoing.push(transmit);
        }
        let fd = self.sender.as_raw_fd();
        let mut next = 0;
        while next < self.outgoing.len() {
            let each = self.outgoing[next..].iter().map(|(to, d)| (&d[..], *to));
            match batch::send(fd, each) {
                Ok(sent) => next += sent,
                // Full buffer or an ICMP error of an earlier send: the
                // datagram is lost, as it could be on the way.
                Err(_) => next += 1,
            }
        }
        self.outgoing.clear();
    }
}

impl Link for DtlsLink {
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, Peer)> {
        loop {
            if let Some((peer, datagram)) = self.listener.poll_data() {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                return Ok((n, peer));
            }
            tokio::select! {
                received = self.socket.recv_from(&mut self.buf) => {
                    let (len, from) = received?;
                    self.listener.on_datagram(Instant::now(), from, &self.buf[..len]);
                    self.flush();
                }
                Ok(()) = self.keys.changed() => {
                    let keys = self.keys.borrow_and_update().clone();
                    self.listener.set_keys(Instant::now(), keys);
                    self.flush();
                }
            }
        }
    }

    async fn send(&mut self, bytes: &[u8], to: &Peer) -> io::Result<()> {
        let written = self.listener.write(Instant::now(), to, bytes);
        self.flush();
        written
    }

    async fn send_all(&mut self, datagrams: &[(Vec<u8>, Peer)]) -> Vec<(usize, io::Error)> {
        let now = Instant::now();
        let failed = datagrams
            .iter()
            .enumerate()
            .filter_map(|(i, (bytes, to))| {
                self.listener.write(now, to, bytes).err().map(|e| (i, e))
            })
            .collect();
        self.flush();
        failed
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.listener.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.listener.handle_timeout(now);
        self.flush();
    }

    fn handshakes(&self) -> Vec<(&'static str, u64)> {
        self.listener.handshakes()
    }

    fn tables(&self) -> Vec<(&'static str, u64)> {
        let (sessions, handshaking) = self.listener.counts();
        vec![
            ("dtls_peers", sessions as u64),
            ("dtls_handshaking", handshaking as u64),
        ]
    }
}

impl Drop for DtlsLink {
    fn drop(&mut self) {
        self.listener.close_all(Instant::now());
        self.flush();
    }
}
