//! The demultiplexer: one UDP socket, many DTLS peers.
//!
//! webrtc-dtls's own listener handshakes one peer after another without a
//! timeout and never forgets a peer, so a device that reboots and comes back
//! from the same address and port is never served again. Here each datagram
//! goes by its source address to that peer's session task (see
//! `session.rs`), and the table of peers is ours to bound:
//!
//! - A peer is created only by a well-formed ClientHello offering a suite
//!   we speak, at most `new_peers_per_s` a second.
//! - At most `max_sessions` peers, of which at most `max_handshakes` are
//!   still handshaking: a ClientHello costs one datagram to send and ~40 KB
//!   to hold. When either bound is reached, the oldest handshake whose peer
//!   has not yet returned a cookie (so may not even own its address) makes
//!   room, if it has had [`COOKIE_GRACE`] to return one; a peer that did
//!   return one, or finished, is never pushed out. The grace keeps a burst
//!   of fakes from pushing out a real device between its ClientHello and
//!   its cookie: during the burst new peers are dropped, and retry.
//! - A ClientHello from the address of an established session means the
//!   device restarted: the old session goes and a new handshake starts at
//!   once.
//! - An entry goes when its session ends for any reason (failure, timeout,
//!   close, idle, panic), through a guard that checks the entry's
//!   generation, so a late end never removes its successor.

use super::credentials::Credentials;
use super::outcomes::{HandshakeOutcomes, Outcome};
use super::prefilter::{self, Datagram};
use super::session::{self, Session};
use super::vconn::VirtualConn;
use crate::coap::exchange::Peer;
use crate::config::psk::PskKeys;
use crate::logging::RateLimited;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Encrypted datagrams waiting for one peer's session; more are dropped
/// (DTLS and CoAP both retransmit).
const INBOX: usize = 32;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// How long an unverified handshake is safe from eviction: far more than a
/// round trip, so a real device has time to return its cookie.
const COOKIE_GRACE: Duration = Duration::from_secs(1);
/// How often the table's size goes to the debug log, when it changed.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Bounds of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_handshakes: usize,
    pub new_peers_per_s: u32,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The peer table, shared by the demultiplexer, the sessions (which mark
/// themselves established and remove themselves) and the link (which finds
/// a session to answer through).
#[derive(Default)]
pub(super) struct Peers {
    table: Mutex<Table>,
    /// How handshakes ended, for /metrics.
    pub outcomes: HandshakeOutcomes,
}

#[derive(Default)]
struct Table {
    peers: HashMap<SocketAddr, Entry>,
    handshaking: usize,
    /// Handshakes without a cookie yet, oldest first; stale items (entries
    /// since verified, finished or gone) are skipped and pruned.
    unverified: VecDeque<(SocketAddr, u64, Instant)>,
    next_generation: u64,
}

struct Entry {
    generation: u64,
    inbox: mpsc::Sender<Vec<u8>>,
    state: State,
    /// Dropping the entry drops this, which ends its session.
    _cancel: oneshot::Sender<()>,
}

enum State {
    Handshaking { verified: bool },
    Established(Established),
}

/// A session after its handshake.
pub(super) struct Established {
    pub identity: Arc<str>,
    /// Plaintext answers for the session to encrypt and send.
    pub outbox: mpsc::Sender<Vec<u8>>,
    /// The key it was authenticated with, in PSK mode: a reload that
    /// removes or changes it closes the session.
    pub psk: Option<Arc<[u8]>>,
}

impl Peers {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves a consistent table: every
        // change below is a single insert or remove.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where to send an answer for `peer`: its session, if it is still the
    /// one of the same identity.
    pub fn outbox(&self, peer: &Peer) -> Option<mpsc::Sender<Vec<u8>>> {
        match &self.lock().peers.get(&peer.addr)?.state {
            State::Established(e) if Some(&e.identity) == peer.identity.as_ref() => {
                Some(e.outbox.clone())
            }
            _ => None,
        }
    }

    /// Marks a session established; false when it was replaced meanwhile.
    pub fn establish(&self, addr: SocketAddr, generation: u64, session: Established) -> bool {
        let mut table = self.lock();
        let Some(entry) = table.peers.get_mut(&addr) else {
            return false;
        };
        if entry.generation != generation {
            return false;
        }
        let was_handshaking = matches!(entry.state, State::Handshaking { .. });
        entry.state = State::Established(session);
        if was_handshaking {
            table.handshaking -= 1;
        }
        true
    }

    /// Forgets `addr` if it is still this generation.
    pub fn forget(&self, addr: SocketAddr, generation: u64) {
        let mut table = self.lock();
        if table.peers.get(&addr).map(|e| e.generation) == Some(generation) {
            table.remove(&addr);
        }
    }

    /// (peers, of which handshaking)
    pub fn counts(&self) -> (usize, usize) {
        let table = self.lock();
        (table.peers.len(), table.handshaking)
    }

    /// Closes the PSK sessions whose key is gone from `keys` or changed;
    /// returns who they were.
    pub fn revoke(&self, keys: &PskKeys) -> Vec<(SocketAddr, Arc<str>)> {
        let mut table = self.lock();
        let revoked: Vec<(SocketAddr, Arc<str>)> = table
            .peers
            .iter()
            .filter_map(|(addr, entry)| match &entry.state {
                State::Established(Established {
                    identity,
                    psk: Some(key),
                    ..
                }) if keys.get(identity.as_bytes()) != Some(key) => Some((*addr, identity.clone())),
                _ => None,
            })
            .collect();
        for (addr, _) in &revoked {
            table.remove(addr);
        }
        revoked
    }

    /// Ends every session.
    pub fn clear(&self) {
        let mut table = self.lock();
        table.peers.clear();
        table.handshaking = 0;
        table.unverified.clear();
    }
}

impl Table {
    fn remove(&mut self, addr: &SocketAddr) {
        if let Some(entry) = self.peers.remove(addr) {
            if matches!(entry.state, State::Handshaking { .. }) {
                self.handshaking -= 1;
            }
        }
    }

    /// Removes the oldest handshake still without a cookie, if it started
    /// before `now - COOKIE_GRACE`; false if there is none such.
    fn evict_unverified(&mut self, now: Instant) -> bool {
        while let Some(&(addr, generation, since)) = self.unverified.front() {
            let current = self.peers.get(&addr).is_some_and(|e| {
                e.generation == generation
                    && matches!(e.state, State::Handshaking { verified: false })
            });
            if !current {
                self.unverified.pop_front();
                continue;
            }
            if now.saturating_duration_since(since) < COOKIE_GRACE {
                return false;
            }
            self.unverified.pop_front();
            self.remove(&addr);
            return true;
        }
        false
    }

    fn remember_unverified(
        &mut self,
        addr: SocketAddr,
        generation: u64,
        now: Instant,
        bound: usize,
    ) {
        self.unverified.push_back((addr, generation, now));
        if self.unverified.len() > 2 * bound.max(self.handshaking) {
            let peers = &self.peers;
            self.unverified.retain(|(a, g, _)| {
                peers.get(a).is_some_and(|e| {
                    e.generation == *g && matches!(e.state, State::Handshaking { verified: false })
                })
            });
        }
    }
}

/// New peers admitted per second, with a burst of as many.
pub(super) struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_second: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(per_second),
            tokens: f64::from(per_second),
            last: now,
        }
    }

    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Datagrams dropped by the demultiplexer, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Dropped {
    malformed: u64,
    unknown_peer: u64,
    no_common_suite: u64,
    rate_limited: u64,
    table_full: u64,
    inbox_full: u64,
}

pub(super) struct Demux {
    pub socket: Arc<UdpSocket>,
    pub name: Arc<str>,
    pub peers: Arc<Peers>,
    pub credentials: Credentials,
    pub limits: Limits,
    /// Decrypted datagrams, to the listener's CoAP server.
    pub inbound: mpsc::Sender<(Peer, Vec<u8>)>,
}

impl Demux {
    /// Reads the socket until `stop` fires or its sender is dropped, then
    /// ends every session.
    pub async fn run(self, mut stop: oneshot::Receiver<()>) {
        let local = match self.socket.local_addr() {
            Ok(a) => a,
            Err(e) => {
                log::error!("{}: cannot read the socket's address: {e}", self.name);
                return;
            }
        };
        let mut keys = self.credentials.keys.clone();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut bucket = TokenBucket::new(self.limits.new_peers_per_s, Instant::now());
        let mut dropped = Dropped::default();
        let mut quiet = RateLimited::new(Duration::from_secs(10));
        let mut report = tokio::time::interval(REPORT_EVERY);
        let mut reported = (0, 0, Dropped::default());
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Ok(()) = keys.changed() => {
                    let current = keys.borrow_and_update().clone();
                    for (addr, identity) in self.peers.revoke(&current) {
                        log::info!("{}: closed the session of {addr} ({identity}): its key was removed or changed", self.name);
                    }
                }
                _ = report.tick() => {
                    let (peers, handshaking) = self.peers.counts();
                    if (peers, handshaking, dropped) != reported {
                        log::debug!(
                            "{}: {peers} sessions ({handshaking} handshaking); dropped so far: {dropped:?}",
                            self.name
                        );
                        reported = (peers, handshaking, dropped);
                    }
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        self.on_datagram(&buf[..len], from, local, &mut bucket, &mut dropped, &mut quiet);
                    }
                    Err(e) => {
                        if quiet.admit("recv", Instant::now()).is_some() {
                            log::warn!("{}: receive error: {e}", self.name);
                        }
                    }
                },
            }
        }
        self.peers.clear();
    }

    fn on_datagram(
        &self,
        d: &[u8],
        from: SocketAddr,
        local: SocketAddr,
        bucket: &mut TokenBucket,
        dropped: &mut Dropped,
        quiet: &mut RateLimited,
    ) {
        let Some(kind) = prefilter::inspect(d) else {
            dropped.malformed += 1;
            return;
        };
        let mut table = self.peers.lock();
        if let Some(entry) = table.peers.get_mut(&from) {
            match (&kind, &mut entry.state) {
                (Datagram::Hello(_), State::Established(e)) => {
                    log::info!(
                        "{}: {from} ({}) started a new handshake; replacing its session",
                        self.name,
                        e.identity
                    );
                    table.remove(&from);
                }
                (kind, state) => {
                    if let (Datagram::Hello(h), State::Handshaking { verified }) = (kind, state) {
                        *verified |= h.has_cookie;
                    }
                    match entry.inbox.try_send(d.to_vec()) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => dropped.inbox_full += 1,
                        Err(mpsc::error::TrySendError::Closed(_)) => table.remove(&from),
                    }
                    return;
                }
            }
        }
        let Datagram::Hello(hello) = kind else {
            dropped.unknown_peer += 1;
            return;
        };
        let Some((mode, config)) = self.credentials.for_hello(&hello) else {
            dropped.no_common_suite += 1;
            if quiet.admit("suites", Instant::now()).is_some() {
                log::info!(
                    "{}: {from} offers no cipher suite we speak; ignored",
                    self.name
                );
            }
            return;
        };
        if !bucket.take(Instant::now()) {
            dropped.rate_limited += 1;
            self.peers.outcomes.count(Outcome::RateLimited);
            return;
        }
        while table.handshaking >= self.limits.max_handshakes
            || table.peers.len() >= self.limits.max_sessions
        {
            if !table.evict_unverified(Instant::now()) {
                dropped.table_full += 1;
                self.peers.outcomes.count(Outcome::TableFull);
                if quiet.admit("full", Instant::now()).is_some() {
                    log::warn!(
                        "{}: peer table full ({} sessions, {} handshaking); new peers wait",
                        self.name,
                        table.peers.len(),
                        table.handshaking
                    );
                }
                return;
            }
        }
        let (inbox, inbox_rx) = mpsc::channel(INBOX);
        let _ = inbox.try_send(d.to_vec());
        let (cancel, cancelled) = oneshot::channel();
        table.next_generation += 1;
        let generation = table.next_generation;
        table.peers.insert(
            from,
            Entry {
                generation,
                inbox,
                state: State::Handshaking {
                    verified: hello.has_cookie,
                },
                _cancel: cancel,
            },
        );
        table.handshaking += 1;
        if !hello.has_cookie {
            table.remember_unverified(from, generation, Instant::now(), self.limits.max_handshakes);
        }
        drop(table);
        let conn = Arc::new(VirtualConn::new(self.socket.clone(), local, from, inbox_rx));
        tokio::spawn(session::run(Session {
            listener: self.name.clone(),
            addr: from,
            generation,
            mode,
            config,
            conn,
            peers: self.peers.clone(),
            keys: self.credentials.keys.clone(),
            cancelled,
            inbound: self.inbound.clone(),
            handshake_timeout: self.limits.handshake_timeout,
            idle_timeout: self.limits.idle_timeout,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_admits_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, t0);
        assert_eq!((0..20).filter(|_| bucket.take(t0)).count(), 10);
        assert!(!bucket.take(t0 + Duration::from_millis(50)));
        assert!(bucket.take(t0 + Duration::from_millis(160)));
        assert_eq!(
            (0..20)
                .filter(|_| bucket.take(t0 + Duration::from_secs(60)))
                .count(),
            10
        );
    }

    fn handshaking(table: &mut Table, addr: SocketAddr, verified: bool) -> oneshot::Receiver<()> {
        handshaking_since(table, addr, verified, Instant::now())
    }

    fn handshaking_since(
        table: &mut Table,
        addr: SocketAddr,
        verified: bool,
        since: Instant,
    ) -> oneshot::Receiver<()> {
        let (inbox, _) = mpsc::channel(1);
        let (cancel, cancelled) = oneshot::channel();
        table.next_generation += 1;
        let generation = table.next_generation;
        table.peers.insert(
            addr,
            Entry {
                generation,
                inbox,
                state: State::Handshaking { verified },
                _cancel: cancel,
            },
        );
        table.handshaking += 1;
        if !verified {
            table.remember_unverified(addr, generation, since, 4);
        }
        cancelled
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn eviction_takes_the_oldest_unverified_handshake_and_ends_it() {
        let t0 = Instant::now();
        let later = t0 + COOKIE_GRACE;
        let mut table = Table::default();
        let mut first = handshaking_since(&mut table, addr(1), false, t0);
        let _verified = handshaking_since(&mut table, addr(2), true, t0);
        let _third = handshaking_since(&mut table, addr(3), false, t0);
        assert!(table.evict_unverified(later));
        assert!(!table.peers.contains_key(&addr(1)));
        assert_eq!(table.handshaking, 2);
        assert!(first.try_recv().is_err(), "the session is told to end");
        assert!(table.evict_unverified(later));
        assert!(!table.evict_unverified(later), "a verified handshake stays");
        assert_eq!(table.peers.len(), 1);
    }

    #[test]
    fn a_handshake_within_its_cookie_grace_is_not_evicted() {
        let t0 = Instant::now();
        let mut table = Table::default();
        let _young = handshaking_since(&mut table, addr(1), false, t0);
        assert!(!table.evict_unverified(t0 + COOKIE_GRACE / 2));
        assert!(table.evict_unverified(t0 + COOKIE_GRACE));
    }

    #[test]
    fn a_late_end_does_not_remove_the_successor() {
        let peers = Peers::default();
        let _old = handshaking(&mut peers.lock(), addr(1), false);
        let old_generation = peers.lock().next_generation;
        peers.lock().remove(&addr(1));
        let _new = handshaking(&mut peers.lock(), addr(1), false);
        peers.forget(addr(1), old_generation);
        assert_eq!(peers.counts(), (1, 1));
    }

    #[test]
    fn revocation_closes_sessions_whose_key_went_or_changed() {
        let peers = Peers::default();
        for (port, identity, key) in [
            (1, "keep", b"k1"),
            (2, "gone", b"k2"),
            (3, "changed", b"k3"),
        ] {
            let _cancelled = handshaking(&mut peers.lock(), addr(port), true);
            let generation = peers.lock().next_generation;
            let (outbox, _) = mpsc::channel(1);
            assert!(peers.establish(
                addr(port),
                generation,
                Established {
                    identity: Arc::from(identity),
                    outbox,
                    psk: Some(Arc::from(&key[..])),
                }
            ));
        }
        let keys = PskKeys::from_pairs(&[("keep", b"k1"), ("changed", b"new")]);
        let mut revoked: Vec<String> = peers
            .revoke(&keys)
            .into_iter()
            .map(|(_, i)| i.to_string())
            .collect();
        revoked.sort();
        assert_eq!(revoked, vec!["changed", "gone"]);
        assert_eq!(peers.counts(), (1, 0));
    }
}
