//! One device's session: one rtc-dtls connection, driven with bytes and
//! time, from the ClientHello that returned our cookie to its end.
//!
//! The connections live in the listener's one rtc-dtls `Endpoint`, each
//! under a key made from the session's number ([`conn_key`]), not from the
//! device's address: the Endpoint only uses the key to find the connection,
//! and the demultiplexer decides which session a datagram is for. That is
//! the seam a DTLS Connection ID (RFC 9146) would use: a session found by
//! its id, whatever address its datagrams come from.
//!
//! The identity is what the handshake authenticated: the PSK identity, or
//! the subject CN of the client certificate. Every datagram of the session
//! carries it to the exchange, where it fills `{identity}`, decides the
//! access control of routes and is part of the deduplication key.
//!
//! Once established, a session ignores records that fail (RFC 6347
//! §4.1.2.7): rtc-dtls answers a PSK record it cannot decrypt with a fatal
//! alert, which would let anyone who can spoof the device's address end its
//! session with one datagram; that alert is not sent.

use super::credentials::{subject_cn, Mode};
use super::demux::Limits;
use super::handoff;
use super::prefilter::ClientHello;
use crate::config::psk::{check_identity, PskKeys};
use bytes::BytesMut;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest decrypted record (one CoAP message) a session takes. RFC 7252
/// §4.6 asks that a message fit one datagram (about 1,152 bytes when the
/// path MTU is unknown); larger payloads go block-wise, whose blocks are at
/// most 1,024 bytes. A larger record is dropped and logged; the session
/// goes on.
pub(super) const MAX_RECORD: usize = 4_096;

/// Datagrams to send, with where to.
pub(super) type Transmits = VecDeque<(SocketAddr, BytesMut)>;

/// The Endpoint's key for session number `id`.
pub(super) fn conn_key(id: u64) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(u128::from(id)), 1, 0, 0))
}

pub(super) struct Session {
    pub id: u64,
    /// The connection's key in the Endpoint.
    conn: SocketAddr,
    /// Where the device is; its answers go there.
    pub addr: SocketAddr,
    /// The credential its hello chose (for the logs until it is known).
    pub mode: Mode,
    pub state: State,
    /// When it last sent a record that decrypted, or was answered.
    heard: Instant,
    /// The earliest timer the table holds for it (see `demux.rs`).
    pub queued: Option<Instant>,
}

pub(super) enum State {
    Handshaking {
        since: Instant,
        /// The random of the ClientHello that started it: the same hello
        /// again is a retransmission, another one a new handshake.
        random: [u8; 32],
    },
    Established(Established),
}

pub(super) struct Established {
    pub identity: Arc<str>,
    /// The key it was authenticated with, in PSK mode: a reload that
    /// removes or changes it closes the session.
    pub psk: Option<Arc<[u8]>>,
}

/// What a datagram brought, for the listener.
#[derive(Debug)]
pub(super) enum Event {
    /// The handshake finished and the identity is good.
    Established,
    /// A CoAP message.
    Data(BytesMut),
    /// A record over [`MAX_RECORD`], dropped.
    Oversized(usize),
    /// An established session dropped a record that failed (forged,
    /// damaged or out of place), without answering it.
    Ignored(String),
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The handshake failed (wrong key, unknown identity, refused
    /// certificate, protocol error).
    Failed(String),
    /// It finished, but the identity is not acceptable.
    Refused(String),
    /// The handshake did not finish in time.
    TimedOut,
    /// The device sent close_notify.
    Closed,
    /// Established and silent for this long.
    Idle(Duration),
}

impl Session {
    /// Starts the session of a ClientHello (in `datagram`) that returned
    /// `cookie`; its first flight is in `out`. A PSK hello's handshake
    /// gets no ephemeral key pair (see `handoff.rs`).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        endpoint: &mut Endpoint,
        out: &mut Transmits,
        now: Instant,
        id: u64,
        addr: SocketAddr,
        mode: Mode,
        datagram: &[u8],
        hello: &ClientHello<'_>,
        cookie: [u8; super::cookie::COOKIE_LEN],
    ) -> Result<Session, String> {
        let _psk = (mode == Mode::Psk).then(handoff::NoKeyExchange::enter);
        let conn = conn_key(id);
        let first = handoff::first_hello(datagram, hello)
            .ok_or("its ClientHello is not message 1 alone in its datagram")?;
        let (read, drawn) = handoff::with_cookie(cookie, || {
            endpoint.read(now, conn, None, BytesMut::from(&first[..]))
        });
        // Its own HelloVerifyRequest: the device has ours.
        while endpoint.poll_transmit().is_some() {}
        let refused = match (read, drawn) {
            (Err(e), _) => Some(format!("rtc-dtls refused its first ClientHello: {e}")),
            (Ok(_), false) => Some("rtc-dtls did not draw our cookie (see handoff.rs)".into()),
            (Ok(_), true) => None,
        };
        if let Some(why) = refused {
            endpoint.stop(now, conn);
            while endpoint.poll_transmit().is_some() {}
            return Err(why);
        }
        let mut random = [0u8; 32];
        random.copy_from_slice(&hello.before_cookie()[2..34]);
        let mut session = Session {
            id,
            conn,
            addr,
            mode,
            state: State::Handshaking { since: now, random },
            heard: now,
            queued: None,
        };
        let mut events = Vec::new();
        match session.on_datagram(
            endpoint,
            out,
            now,
            datagram,
            &PskKeys::default(),
            &mut events,
        ) {
            Ok(()) => Ok(session),
            Err(end) => {
                session.close(endpoint, out, now);
                Err(format!("{end:?}"))
            }
        }
    }

    /// Whether `hello` is the one that started this session's handshake.
    pub fn started_by(&self, hello: &ClientHello<'_>) -> bool {
        matches!(&self.state, State::Handshaking { random, .. } if hello.before_cookie().get(2..34) == Some(&random[..]))
    }

    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// The identity, once established.
    pub fn identity(&self) -> Option<&Arc<str>> {
        match &self.state {
            State::Established(e) => Some(&e.identity),
            State::Handshaking { .. } => None,
        }
    }

    /// Feeds one datagram from the device; what it brought goes to
    /// `events`, what to send to `out`. `Err`: the session has ended.
    pub fn on_datagram(
        &mut self,
        endpoint: &mut Endpoint,
        out: &mut Transmits,
        now: Instant,
        datagram: &[u8],
        keys: &PskKeys,
        events: &mut Vec<Event>,
    ) -> Result<(), End> {
        let read = endpoint.read(now, self.conn, None, BytesMut::from(datagram));
        match read {
            Ok(happened) => {
                self.drain(endpoint, out, true);
                for event in happened {
                    match event {
                        EndpointEvent::HandshakeComplete => {
                            self.establish(endpoint, keys)?;
                            self.heard = now;
                            events.push(Event::Established);
                        }
                        EndpointEvent::ApplicationData(data) => {
                            self.heard = now;
                            if data.len() > MAX_RECORD {
                                events.push(Event::Oversized(data.len()));
                            } else {
                                events.push(Event::Data(data));
                            }
                        }
                        EndpointEvent::PeerClosed => return Err(End::Closed),
                        _ => {}
                    }
                }
                Ok(())
            }
            Err(e) if self.is_established() => {
                // Whatever rtc-dtls would answer (a fatal alert) stays here.
                self.drain(endpoint, out, false);
                events.push(Event::Ignored(e.to_string()));
                Ok(())
            }
            Err(e) => {
                // Its alert tells the device at once.
                self.drain(endpoint, out, true);
                Err(End::Failed(e.to_string()))
            }
        }
    }

    /// Encrypts `bytes` for the device into `out`.
    pub fn write(
        &mut self,
        endpoint: &mut Endpoint,
        out: &mut Transmits,
        now: Instant,
        bytes: &[u8],
    ) -> Result<(), String> {
        endpoint
            .write(now, self.conn, bytes)
            .map_err(|e| e.to_string())?;
        self.heard = now;
        self.drain(endpoint, out, true);
        Ok(())
    }

    /// When the session next needs [`Session::on_timer`]: a handshake
    /// retransmission or its deadline, or the idle timeout.
    pub fn next_due(&self, endpoint: &Endpoint, limits: &Limits) -> Instant {
        match &self.state {
            State::Handshaking { since, .. } => {
                let deadline = *since + limits.handshake_timeout;
                endpoint
                    .poll_timeout(&self.conn)
                    .map_or(deadline, |t| t.min(deadline))
            }
            State::Established(_) => self.heard + limits.idle_timeout,
        }
    }

    /// Runs what is due at `now`. `Err`: the session has ended.
    pub fn on_timer(
        &mut self,
        endpoint: &mut Endpoint,
        out: &mut Transmits,
        now: Instant,
        limits: &Limits,
    ) -> Result<(), End> {
        match &self.state {
            State::Handshaking { since, .. } => {
                if now >= *since + limits.handshake_timeout {
                    return Err(End::TimedOut);
                }
                if endpoint.poll_timeout(&self.conn).is_some_and(|t| t <= now) {
                    let retransmitted = endpoint.handle_timeout(self.conn, now);
                    self.drain(endpoint, out, true);
                    // Retransmissions used up: the device has gone.
                    retransmitted.map_err(|_| End::TimedOut)?;
                }
                Ok(())
            }
            State::Established(_) if now >= self.heard + limits.idle_timeout => {
                Err(End::Idle(limits.idle_timeout))
            }
            State::Established(_) => Ok(()),
        }
    }

    /// Ends the connection: a close_notify to an established device.
    pub fn close(&self, endpoint: &mut Endpoint, out: &mut Transmits, now: Instant) {
        endpoint.stop(now, self.conn);
        self.drain(endpoint, out, self.is_established());
    }

    fn establish(&mut self, endpoint: &Endpoint, keys: &PskKeys) -> Result<(), End> {
        let state = endpoint
            .get_connection_state(self.conn)
            .ok_or_else(|| End::Failed("its connection is gone".into()))?;
        let (name, psk) = if state.is_cipher_suite_psk() {
            self.mode = Mode::Psk;
            let name = String::from_utf8(state.identity_hint.clone())
                .map_err(|_| End::Refused("its PSK identity is not UTF-8".into()))?;
            let psk = keys.get(name.as_bytes()).cloned();
            (name, psk)
        } else {
            self.mode = Mode::Certificate;
            let der = state
                .peer_certificates
                .first()
                .ok_or_else(|| End::Refused("it sent no certificate".into()))?;
            let name = subject_cn(der)
                .ok_or_else(|| End::Refused("its certificate has no subject CN".into()))?;
            (name, None)
        };
        check_identity(&name).map_err(|why| End::Refused(format!("the identity {why}")))?;
        self.state = State::Established(Established {
            identity: Arc::from(name),
            psk,
        });
        Ok(())
    }

    fn drain(&self, endpoint: &mut Endpoint, out: &mut Transmits, send: bool) {
        while let Some(transmit) = endpoint.poll_transmit() {
            if send {
                out.push_back((self.addr, transmit.message));
            }
        }
    }
}
