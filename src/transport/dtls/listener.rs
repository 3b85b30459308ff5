//! One DTLS listener as a state machine: datagrams, answers to encrypt and
//! time in; datagrams to send, decrypted CoAP messages and log lines out.
//! No socket and no clock (the link in `mod.rs` is the I/O around it), so
//! tests drive it deterministically.
//!
//! Every datagram passes the prefilter first. A ClientHello is answered
//! statelessly with a HelloVerifyRequest (`cookie.rs`) unless it returns a
//! valid cookie; then, if the table admits it (`demux.rs`), it starts a
//! session (`session.rs`) in the listener's one rtc-dtls `Endpoint`, which
//! holds every connection. Other datagrams go to the session of their key,
//! or nowhere.
//!
//! A ClientHello that returns a valid cookie from the address of an
//! established session means the device restarted (the cookie proves it
//! owns the address): the old session goes and the new handshake starts at
//! once. A ClientHello without one leaves the session alone.

use super::cookie::{self, CookieJar};
use super::credentials::{Credentials, Mode};
use super::demux::{Limits, Refusal, SessionKey, Table};
use super::outcomes::{HandshakeOutcomes, Outcome};
use super::prefilter::{self, Datagram};
use super::session::{End, Event, Session, State, Transmits};
use crate::coap::exchange::Peer;
use crate::config::psk::PskKeys;
use crate::logging::RateLimited;
use crate::transport::server::Device;
use bytes::BytesMut;
use rtc_dtls::endpoint::Endpoint;
use rtc_shared::TransportProtocol;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the table's size goes to the debug log, when it changed.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Datagrams the listener did not pass on, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Dropped {
    malformed: u64,
    unknown_peer: u64,
    no_common_suite: u64,
    rate_limited: u64,
    table_full: u64,
    /// Records an established session could not use (forged, damaged).
    ignored: u64,
    oversized: u64,
}

pub(super) struct Listener {
    name: Arc<str>,
    endpoint: Endpoint,
    credentials: Credentials,
    cookies: CookieJar,
    table: Table,
    keys: Arc<PskKeys>,
    outcomes: HandshakeOutcomes,
    dropped: Dropped,
    /// HelloVerifyRequests sent so far.
    cookies_sent: u64,
    transmits: Transmits,
    inbound: VecDeque<(Peer, BytesMut)>,
    events: Vec<Event>,
    quiet: RateLimited,
    next_report: Instant,
    reported: (usize, usize, u64, Dropped),
}

impl Listener {
    pub fn new(
        name: Arc<str>,
        local: SocketAddr,
        credentials: Credentials,
        cookies: CookieJar,
        limits: Limits,
        keys: Arc<PskKeys>,
        now: Instant,
    ) -> Listener {
        Listener {
            name,
            endpoint: Endpoint::new(
                local,
                TransportProtocol::UDP,
                Some(credentials.config.clone()),
            ),
            credentials,
            cookies,
            table: Table::new(limits, now),
            keys,
            outcomes: HandshakeOutcomes::default(),
            dropped: Dropped::default(),
            cookies_sent: 0,
            transmits: Transmits::new(),
            inbound: VecDeque::new(),
            events: Vec::new(),
            quiet: RateLimited::new(Duration::from_secs(10)),
            next_report: now + REPORT_EVERY,
            reported: (0, 0, 0, Dropped::default()),
        }
    }

    /// The next datagram to send, and where to.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.transmits.pop_front()
    }

    /// The next decrypted CoAP message, with its device.
    pub fn poll_data(&mut self) -> Option<(Peer, BytesMut)> {
        self.inbound.pop_front()
    }

    /// When [`Listener::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(
            self.table
                .next_timer()
                .map_or(self.next_report, |t| t.min(self.next_report)),
        )
    }

    pub fn handshakes(&self) -> Vec<(&'static str, u64)> {
        self.outcomes.totals()
    }

    /// (sessions, of which handshaking)
    pub fn counts(&self) -> (usize, usize) {
        self.table.counts()
    }

    /// A datagram from `from`.
    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, d: &[u8]) {
        let Some(kind) = prefilter::inspect(d) else {
            self.dropped.malformed += 1;
            return;
        };
        let key: SessionKey = from;
        let Datagram::Hello(hello) = kind else {
            if self.table.get(&key).is_some() {
                self.feed_session(now, key, d);
            } else {
                self.dropped.unknown_peer += 1;
            }
            return;
        };
        let Some(mode) = self.credentials.mode_for(&hello) else {
            self.dropped.no_common_suite += 1;
            if self.quiet.admit("suites", now).is_some() {
                log::info!(
                    "{}: {from} offers no cipher suite we speak; ignored",
                    self.name
                );
            }
            return;
        };
        if self.table.get(&key).is_some_and(|s| s.started_by(&hello)) {
            // The hello of a handshake under way, again: its first flight
            // was lost; the session retransmits on its own timer.
            self.feed_session(now, key, d);
            return;
        }
        if !hello.has_cookie || !self.cookies.verify(now, from, &hello) {
            let cookie = self.cookies.issue(now, from, &hello);
            self.transmits.push_back((
                from,
                BytesMut::from(&cookie::hello_verify_request(&hello, &cookie)[..]),
            ));
            self.cookies_sent += 1;
            self.outcomes.count(Outcome::CookieSent);
            return;
        }
        let mut cookie = [0u8; cookie::COOKIE_LEN];
        cookie.copy_from_slice(hello.cookie());
        if let Some(old) = self.table.remove(&key) {
            match old.identity() {
                Some(identity) => log::info!(
                    "{}: {from} ({identity}) started a new handshake; replacing its session",
                    self.name
                ),
                None => log::debug!("{}: {from} started its handshake again", self.name),
            }
            old.close(&mut self.endpoint, &mut self.transmits, now);
        }
        match self.table.admit(now) {
            Ok(evicted) => {
                if let Some(evicted) = evicted {
                    log::debug!(
                        "{}: dropped the handshake of {} to make room",
                        self.name,
                        evicted.addr
                    );
                    self.outcomes.count(Outcome::Timeout);
                    evicted.close(&mut self.endpoint, &mut self.transmits, now);
                }
            }
            Err(Refusal::RateLimited) => {
                self.dropped.rate_limited += 1;
                self.outcomes.count(Outcome::RateLimited);
                return;
            }
            Err(Refusal::TableFull) => {
                self.dropped.table_full += 1;
                self.outcomes.count(Outcome::TableFull);
                if self.quiet.admit("full", now).is_some() {
                    let (sessions, handshaking) = self.table.counts();
                    log::warn!(
                        "{}: peer table full ({sessions} sessions, {handshaking} handshaking); new peers wait",
                        self.name
                    );
                }
                return;
            }
        }
        let id = self.table.next_id();
        match Session::start(
            &mut self.endpoint,
            &mut self.transmits,
            now,
            id,
            from,
            mode,
            d,
            &hello,
            cookie,
        ) {
            Ok(session) => {
                let due = session.next_due(&self.endpoint, self.table.limits());
                self.table.insert(key, session);
                self.table.schedule(&key, due);
            }
            Err(why) => {
                self.outcomes.count(Outcome::Failed);
                log::info!("{}: handshake with {from} did not start: {why}", self.name);
            }
        }
    }

    fn feed_session(&mut self, now: Instant, key: SessionKey, d: &[u8]) {
        let mut events = std::mem::take(&mut self.events);
        let (endpoint, transmits, keys) = (&mut self.endpoint, &mut self.transmits, &self.keys);
        let result = self.table.with(&key, |s| {
            s.on_datagram(endpoint, transmits, now, d, keys, &mut events)
        });
        for event in events.drain(..) {
            self.on_event(key, event);
        }
        self.events = events;
        match result {
            Some(Err(end)) => self.end(now, key, end),
            Some(Ok(())) => self.reschedule(key),
            None => {}
        }
    }

    fn reschedule(&mut self, key: SessionKey) {
        if let Some(session) = self.table.get(&key) {
            let due = session.next_due(&self.endpoint, self.table.limits());
            self.table.schedule(&key, due);
        }
    }

    fn on_event(&mut self, key: SessionKey, event: Event) {
        let Some(session) = self.table.get(&key) else {
            return;
        };
        let peer = Peer {
            addr: session.addr,
            identity: session.identity().cloned(),
        };
        match event {
            Event::Established => {
                self.outcomes.count(Outcome::Ok);
                let how = match session.mode {
                    Mode::Psk => "a pre-shared key",
                    Mode::Certificate => "a certificate",
                };
                log::info!("{}: {} connected with {how}", self.name, Device(&peer));
            }
            Event::Data(data) => self.inbound.push_back((peer, data)),
            Event::Oversized(len) => {
                self.dropped.oversized += 1;
                log::debug!(
                    "{}: dropped a record over {} bytes from {} ({len} bytes)",
                    self.name,
                    super::session::MAX_RECORD,
                    Device(&peer)
                );
            }
            Event::Ignored(why) => {
                self.dropped.ignored += 1;
                log::debug!(
                    "{}: ignored a record from {}: {why}",
                    self.name,
                    Device(&peer)
                );
            }
        }
    }

    /// Takes the session of `key` out and says why it ended.
    fn end(&mut self, now: Instant, key: SessionKey, end: End) {
        let Some(session) = self.table.remove(&key) else {
            return;
        };
        let addr = session.addr;
        match (&session.state, end) {
            (State::Handshaking { .. }, End::Failed(why)) => {
                let hint = match session.mode {
                    // rtc-dtls reports a wrong key only as the failed Finished.
                    Mode::Psk => " (unknown identity or wrong key)",
                    Mode::Certificate => " (certificate refused?)",
                };
                log::info!("{}: handshake with {addr} failed{hint}: {why}", self.name);
                self.outcomes.count(Outcome::Failed);
            }
            (State::Handshaking { .. }, End::Refused(why)) => {
                log::info!("{}: refused {addr}: {why}", self.name);
                self.outcomes.count(Outcome::RefusedIdentity);
            }
            (State::Handshaking { .. }, End::TimedOut) => {
                log::debug!("{}: handshake with {addr} timed out", self.name);
                self.outcomes.count(Outcome::Timeout);
            }
            (State::Handshaking { .. }, why) => {
                log::info!("{}: handshake with {addr} ended: {why:?}", self.name);
                self.outcomes.count(Outcome::Failed);
            }
            (State::Established(e), why) => {
                let why = match why {
                    End::Closed => "closed by the device".to_string(),
                    End::Idle(after) => format!("idle for {after:?}"),
                    other => format!("{other:?}"),
                };
                let peer = Peer {
                    addr,
                    identity: Some(e.identity.clone()),
                };
                log::info!("{}: session of {} ended: {why}", self.name, Device(&peer));
            }
        }
        session.close(&mut self.endpoint, &mut self.transmits, now);
    }

    /// An answer for `to`, to encrypt and send through its session, if it
    /// is still the one of the same identity.
    pub fn write(&mut self, now: Instant, to: &Peer, bytes: &[u8]) -> io::Result<()> {
        let gone = || io::Error::new(io::ErrorKind::NotConnected, "its session has ended");
        let key: SessionKey = to.addr;
        let session = self.table.get(&key).ok_or_else(gone)?;
        if session.identity() != to.identity.as_ref() || to.identity.is_none() {
            return Err(gone());
        }
        let (endpoint, transmits) = (&mut self.endpoint, &mut self.transmits);
        self.table
            .with(&key, |s| s.write(endpoint, transmits, now, bytes))
            .ok_or_else(gone)?
            .map_err(io::Error::other)
    }

    /// Runs whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.table.pop_due(now) {
            let (endpoint, transmits) = (&mut self.endpoint, &mut self.transmits);
            let limits = self.table.limits().clone();
            match self
                .table
                .with(&key, |s| s.on_timer(endpoint, transmits, now, &limits))
            {
                Some(Err(end)) => self.end(now, key, end),
                Some(Ok(())) => self.reschedule(key),
                None => {}
            }
        }
        if now >= self.next_report {
            self.next_report = now + REPORT_EVERY;
            let (sessions, handshaking) = self.table.counts();
            let report = (sessions, handshaking, self.cookies_sent, self.dropped);
            if report != self.reported {
                log::debug!(
                    "{}: {sessions} sessions ({handshaking} handshaking); {} hello verify requests sent; dropped so far: {:?}",
                    self.name,
                    self.cookies_sent,
                    self.dropped
                );
                self.reported = report;
            }
        }
    }

    /// New PSK keys: sessions of identities that keep their key stay, the
    /// others are closed.
    pub fn set_keys(&mut self, now: Instant, keys: Arc<PskKeys>) {
        for (key, session) in self.table.revoke(&keys) {
            if let Some(identity) = session.identity() {
                log::info!(
                    "{}: closed the session of {key} ({identity}): its key was removed or changed",
                    self.name
                );
            }
            session.close(&mut self.endpoint, &mut self.transmits, now);
        }
        self.keys = keys;
    }

    /// Ends every session (close_notify to the established ones).
    pub fn close_all(&mut self, now: Instant) {
        for session in self.table.drain() {
            session.close(&mut self.endpoint, &mut self.transmits, now);
        }
    }
}

#[cfg(test)]
mod tests;
