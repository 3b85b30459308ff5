//! The demultiplexer's table: one listener's sessions, found by a
//! [`SessionKey`], bounded, with their timers. Bytes and time in, decisions
//! out; no socket, no clock.
//!
//! - A session is created only for a ClientHello that returned a valid
//!   cookie (`cookie.rs`), so its source address is real; at most
//!   `new_peers_per_s` a second ([`Table::admit`]).
//! - At most `max_sessions` sessions, of which at most `max_handshakes`
//!   still handshaking. When either bound is reached, the oldest handshake
//!   that has had [`HANDSHAKE_GRACE`] to finish makes room; an established
//!   session is never pushed out. Otherwise the new peer waits and retries.
//! - The key is the device's address today. With a DTLS Connection ID
//!   (RFC 9146) it would be the id, and the address only where to answer
//!   (`Session::addr`): nothing here reads the address out of the key.
//! - Timers: each session has at most one due time queued that matters
//!   ([`Session::queued`]); a queued time that is no longer the session's
//!   is skipped when it comes up, and the queue is rebuilt when stale
//!   entries outnumber live ones. Idle timeouts are checked lazily: the
//!   time queued is a lower bound, the session says when it is really due.

use super::session::Session;
use crate::config::psk::PskKeys;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a handshake is safe from eviction: several round trips even
/// over slow links, so a device has time to finish.
pub(super) const HANDSHAKE_GRACE: Duration = Duration::from_secs(2);

/// Bounds of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_handshakes: usize,
    pub new_peers_per_s: u32,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// What finds a session. The source address today; a connection id would
/// be another variant.
pub(super) type SessionKey = SocketAddr;

/// Why a new session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    RateLimited,
    TableFull,
}

pub(super) struct Table {
    sessions: HashMap<SessionKey, Session>,
    handshaking: usize,
    timers: BinaryHeap<Reverse<(Instant, SessionKey, u64)>>,
    next_id: u64,
    bucket: TokenBucket,
    limits: Limits,
}

impl Table {
    pub fn new(limits: Limits, now: Instant) -> Table {
        Table {
            sessions: HashMap::new(),
            handshaking: 0,
            timers: BinaryHeap::new(),
            next_id: 0,
            bucket: TokenBucket::new(limits.new_peers_per_s, now),
            limits,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn get(&self, key: &SessionKey) -> Option<&Session> {
        self.sessions.get(key)
    }

    /// Runs `f` on the session of `key`, keeping the count of handshakes
    /// true whatever `f` does to it.
    pub fn with<R>(&mut self, key: &SessionKey, f: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let session = self.sessions.get_mut(key)?;
        let before = session.is_established();
        let r = f(session);
        match (before, session.is_established()) {
            (false, true) => self.handshaking -= 1,
            (true, false) => self.handshaking += 1,
            _ => {}
        }
        Some(r)
    }

    /// (sessions, of which handshaking)
    pub fn counts(&self) -> (usize, usize) {
        (self.sessions.len(), self.handshaking)
    }

    /// Whether a new session may start at `now`, for a hello that returned
    /// its cookie. Makes room by taking out the oldest handshake past its
    /// grace, which is returned for the caller to close.
    pub fn admit(&mut self, now: Instant) -> Result<Option<Session>, Refusal> {
        if !self.bucket.take(now) {
            return Err(Refusal::RateLimited);
        }
        if self.handshaking < self.limits.max_handshakes
            && self.sessions.len() < self.limits.max_sessions
        {
            return Ok(None);
        }
        let oldest = self
            .sessions
            .iter()
            .filter_map(|(key, s)| match s.state {
                super::session::State::Handshaking { since, .. } => Some((since, *key)),
                super::session::State::Established(_) => None,
            })
            .min();
        match oldest {
            Some((since, key)) if now.saturating_duration_since(since) >= HANDSHAKE_GRACE => {
                Ok(self.remove(&key))
            }
            _ => Err(Refusal::TableFull),
        }
    }

    /// A number for a new session.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn insert(&mut self, key: SessionKey, session: Session) -> Option<Session> {
        if !session.is_established() {
            self.handshaking += 1;
        }
        let old = self.sessions.insert(key, session);
        if old.as_ref().is_some_and(|s| !s.is_established()) {
            self.handshaking -= 1;
        }
        old
    }

    pub fn remove(&mut self, key: &SessionKey) -> Option<Session> {
        let session = self.sessions.remove(key)?;
        if !session.is_established() {
            self.handshaking -= 1;
        }
        Some(session)
    }

    /// Queues `due` for the session of `key`, unless an earlier time is
    /// queued for it already.
    pub fn schedule(&mut self, key: &SessionKey, due: Instant) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.queued.is_some_and(|queued| queued <= due) {
            return;
        }
        session.queued = Some(due);
        self.timers.push(Reverse((due, *key, session.id)));
        if self.timers.len() > 2 * self.sessions.len() + 1024 {
            self.timers = self
                .sessions
                .iter()
                .filter_map(|(key, s)| s.queued.map(|t| Reverse((t, *key, s.id))))
                .collect();
        }
    }

    /// The next session whose queued time has come, taken off the queue.
    pub fn pop_due(&mut self, now: Instant) -> Option<SessionKey> {
        while let Some(&Reverse((due, key, id))) = self.timers.peek() {
            if due > now {
                return None;
            }
            self.timers.pop();
            if let Some(session) = self.sessions.get_mut(&key) {
                if session.id == id && session.queued == Some(due) {
                    session.queued = None;
                    return Some(key);
                }
            }
        }
        None
    }

    /// The earliest time queued (maybe a stale one: a spurious wake-up).
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Takes out the PSK sessions whose key is gone from `keys` or changed.
    pub fn revoke(&mut self, keys: &PskKeys) -> Vec<(SessionKey, Session)> {
        let revoked: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter_map(|(key, s)| match &s.state {
                super::session::State::Established(e) => match &e.psk {
                    Some(psk) if keys.get(e.identity.as_bytes()) != Some(psk) => Some(*key),
                    _ => None,
                },
                super::session::State::Handshaking { .. } => None,
            })
            .collect();
        revoked
            .into_iter()
            .filter_map(|key| self.remove(&key).map(|s| (key, s)))
            .collect()
    }

    /// Takes out every session.
    pub fn drain(&mut self) -> Vec<Session> {
        self.handshaking = 0;
        self.timers.clear();
        self.sessions.drain().map(|(_, s)| s).collect()
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
}
