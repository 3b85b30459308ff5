//! One peer's session: the handshake under a timeout, then decrypted
//! datagrams to the CoAP server and its answers back, until the device
//! closes, fails, falls silent for the idle timeout, or the demultiplexer
//! ends it (replaced by a new handshake, key revoked, table cleared).
//!
//! The identity is what the handshake authenticated: the PSK identity, or
//! the subject CN of the client certificate. Every datagram of the session
//! carries it to the exchange, where it fills `{identity}`, decides the
//! access control of routes and is part of the deduplication key.

use super::credentials::{subject_cn, Mode};
use super::demux::{Established, Peers};
use super::vconn::VirtualConn;
use crate::coap::exchange::Peer;
use crate::config::psk::{check_identity, PskKeys};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use webrtc_dtls::config::Config;
use webrtc_dtls::conn::DTLSConn;

use super::outcomes::Outcome;

/// Answers waiting to be encrypted for one session.
const OUTBOX: usize = 64;
/// Largest decrypted record (one CoAP message) a session accepts. Each
/// idle session holds a buffer of this size while it waits to read, so it
/// is most of what an idle session costs that is ours: 16 KiB (the DTLS
/// maximum) made an idle session cost 49 KB, 4 KiB 37 KB (1,000 sessions
/// held by `coap-load --idle-hold` against the release daemon, RSS before
/// and after). RFC 7252 §4.6 asks that a message fit
/// one datagram (about 1,152 bytes when the path MTU is unknown); larger
/// payloads go block-wise, whose blocks are at most 1,024 bytes. A larger
/// record is dropped and logged; the session goes on.
const MAX_RECORD: usize = 4_096;
/// How long an answer or a close_notify may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct Session {
    pub listener: Arc<str>,
    pub addr: SocketAddr,
    pub generation: u64,
    pub mode: Mode,
    pub config: Config,
    pub conn: Arc<VirtualConn>,
    pub peers: Arc<Peers>,
    pub keys: watch::Receiver<Arc<PskKeys>>,
    /// Fires (with an error) when the demultiplexer drops the entry.
    pub cancelled: oneshot::Receiver<()>,
    pub inbound: mpsc::Sender<(Peer, Vec<u8>)>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Forgets the peer when the session ends, however it ends (also by panic).
struct Forget {
    peers: Arc<Peers>,
    addr: SocketAddr,
    generation: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.peers.forget(self.addr, self.generation);
    }
}

pub(super) async fn run(mut s: Session) {
    let _forget = Forget {
        peers: s.peers.clone(),
        addr: s.addr,
        generation: s.generation,
    };
    let handshake = DTLSConn::new(s.conn.clone(), s.config.clone(), false, None);
    let conn = tokio::select! {
        done = tokio::time::timeout(s.handshake_timeout, handshake) => match done {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                let hint = match s.mode {
                    // webrtc-dtls reports a wrong key only as the alert it sends.
                    Mode::Psk => " (unknown identity or wrong key)",
                    Mode::Certificate => " (certificate refused?)",
                };
                log::info!("{}: handshake with {} failed{hint}: {e}", s.listener, s.addr);
                s.peers.outcomes.count(Outcome::Failed);
                return;
            }
            Err(_) => {
                log::debug!("{}: handshake with {} timed out", s.listener, s.addr);
                s.peers.outcomes.count(Outcome::Timeout);
                return;
            }
        },
        _ = &mut s.cancelled => return,
    };
    let identity = match identity(&conn, s.mode).await {
        Ok(identity) => identity,
        Err(why) => {
            log::info!("{}: refused {}: {why}", s.listener, s.addr);
            s.peers.outcomes.count(Outcome::RefusedIdentity);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, conn.close()).await;
            return;
        }
    };
    let (outbox, mut answers) = mpsc::channel(OUTBOX);
    let psk = match s.mode {
        Mode::Psk => s.keys.borrow().get(identity.as_bytes()).cloned(),
        Mode::Certificate => None,
    };
    let session = Established {
        identity: identity.clone(),
        outbox,
        psk,
    };
    if !s.peers.establish(s.addr, s.generation, session) {
        return;
    }
    s.peers.outcomes.count(Outcome::Ok);
    let how = match s.mode {
        Mode::Psk => "a pre-shared key",
        Mode::Certificate => "a certificate",
    };
    log::info!(
        "{}: {} ({identity}) connected with {how}",
        s.listener,
        s.addr
    );
    let peer = Peer {
        addr: s.addr,
        identity: Some(identity),
    };
    let why = serve(&mut s, &conn, &peer, &mut answers).await;
    log::info!(
        "{}: session of {} ended: {why}",
        s.listener,
        super::super::server::Device(&peer)
    );
    let _ = tokio::time::timeout(WRITE_TIMEOUT, conn.close()).await;
}

/// Relays until the session ends; says why.
async fn serve(
    s: &mut Session,
    conn: &DTLSConn,
    peer: &Peer,
    answers: &mut mpsc::Receiver<Vec<u8>>,
) -> String {
    let mut buf = vec![0u8; MAX_RECORD];
    let mut idle_until = Instant::now() + s.idle_timeout;
    loop {
        tokio::select! {
            _ = &mut s.cancelled => return "closed by the gateway (replaced, revoked or stopping)".into(),
            _ = tokio::time::sleep_until(idle_until) => return format!("idle for {:?}", s.idle_timeout),
            Some(answer) = answers.recv() => {
                if let Err(e) = conn.write(&answer, Some(WRITE_TIMEOUT)).await {
                    return format!("cannot send: {e}");
                }
                idle_until = Instant::now() + s.idle_timeout;
            }
            read = conn.read(&mut buf, None) => match read {
                Ok(n) => {
                    idle_until = Instant::now() + s.idle_timeout;
                    if s.inbound.send((peer.clone(), buf[..n].to_vec())).await.is_err() {
                        return "the listener stopped".into();
                    }
                }
                Err(webrtc_dtls::Error::ErrConnClosed | webrtc_dtls::Error::ErrAlertFatalOrClose) => {
                    return "closed by the device".into()
                }
                Err(webrtc_dtls::Error::ErrBufferTooSmall) => {
                    log::debug!(
                        "{}: dropped a record over {MAX_RECORD} bytes from {}",
                        s.listener,
                        super::super::server::Device(peer)
                    );
                }
                Err(e) => return format!("{e}"),
            },
        }
    }
}

/// The authenticated identity of a finished handshake.
async fn identity(conn: &DTLSConn, mode: Mode) -> Result<Arc<str>, String> {
    let state = conn.connection_state().await;
    let name = match mode {
        Mode::Psk => String::from_utf8(state.identity_hint.clone())
            .map_err(|_| "its PSK identity is not UTF-8".to_string())?,
        Mode::Certificate => {
            let der = state
                .peer_certificates
                .first()
                .ok_or("it sent no certificate")?;
            subject_cn(der).ok_or("its certificate has no subject CN")?
        }
    };
    check_identity(&name).map_err(|why| format!("the identity {why}"))?;
    Ok(Arc::from(name))
}
