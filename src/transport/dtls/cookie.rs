//! The stateless cookie exchange of DTLS 1.2 (RFC 6347 §4.2.1).
//!
//! A ClientHello costs its sender one datagram, from any source address it
//! likes; a DTLS connection costs the server kilobytes. So the first
//! ClientHello from an address is answered with a HelloVerifyRequest and
//! forgotten: its cookie is an HMAC over the client's address and the hello's
//! parameters, under a secret of this listener. Only a ClientHello that
//! returns a valid cookie, which needs the HelloVerifyRequest to have reached
//! its source address, may create state (`demux.rs`). 100,000 spoofed
//! ClientHellos from distinct ports cost 100,000 small answers and nothing
//! kept.
//!
//! The secret changes every [`ROTATE_EVERY`]; the previous one stays valid
//! for one more period, so a cookie lives between one and two periods, far
//! longer than a round trip even over NB-IoT. The parameters bound are those
//! RFC 6347 says a client must repeat: version, random, session id, cipher
//! suites and compression methods (not the extensions).
//!
//! The cookie is [`COOKIE_LEN`] bytes: rtc-dtls's own cookie length, which
//! `handoff.rs` relies on to hand it our cookie.

use super::prefilter::ClientHello;
use ring::hmac;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bytes of a cookie: an HMAC-SHA256 cut to 160 bits.
pub(super) const COOKIE_LEN: usize = 20;
/// How often the secret changes.
pub(super) const ROTATE_EVERY: Duration = Duration::from_secs(60);

/// Where new secrets come from: the OS in the daemon, a counter in tests.
pub(super) type Secrets = Box<dyn FnMut() -> [u8; 32] + Send>;

/// The secrets of one listener.
pub(super) struct CookieJar {
    current: hmac::Key,
    previous: hmac::Key,
    rotate_at: Instant,
    fresh: Secrets,
}

impl CookieJar {
    pub fn new(now: Instant, mut fresh: Secrets) -> CookieJar {
        let current = hmac::Key::new(hmac::HMAC_SHA256, &fresh());
        let previous = hmac::Key::new(hmac::HMAC_SHA256, &fresh());
        CookieJar {
            current,
            previous,
            rotate_at: now + ROTATE_EVERY,
            fresh,
        }
    }

    /// Secrets from a CSPRNG seeded by the operating system.
    pub fn from_os(now: Instant) -> CookieJar {
        CookieJar::new(now, Box::new(rand::random::<[u8; 32]>))
    }

    fn rotate(&mut self, now: Instant) {
        if now < self.rotate_at {
            return;
        }
        let stale = now.saturating_duration_since(self.rotate_at) >= ROTATE_EVERY;
        let next = hmac::Key::new(hmac::HMAC_SHA256, &(self.fresh)());
        self.previous = if stale {
            // Idle for two periods: no cookie out there is young enough.
            hmac::Key::new(hmac::HMAC_SHA256, &(self.fresh)())
        } else {
            std::mem::replace(&mut self.current, next.clone())
        };
        self.current = next;
        self.rotate_at = now + ROTATE_EVERY;
    }

    /// The cookie for `hello` from `from`.
    pub fn issue(
        &mut self,
        now: Instant,
        from: SocketAddr,
        hello: &ClientHello<'_>,
    ) -> [u8; COOKIE_LEN] {
        self.rotate(now);
        cookie(&self.current, from, hello)
    }

    /// Whether `hello` returns a cookie this listener issued to `from`
    /// within the last one or two periods.
    pub fn verify(&mut self, now: Instant, from: SocketAddr, hello: &ClientHello<'_>) -> bool {
        self.rotate(now);
        let got = hello.cookie();
        got.len() == COOKIE_LEN
            && [&self.current, &self.previous].into_iter().any(|key| {
                rtc_dtls::crypto_provider::constant_time_eq(&cookie(key, from, hello), got)
            })
    }
}

fn cookie(key: &hmac::Key, from: SocketAddr, hello: &ClientHello<'_>) -> [u8; COOKIE_LEN] {
    let mut context = hmac::Context::with_key(key);
    match from {
        SocketAddr::V4(a) => context.update(&a.ip().octets()),
        SocketAddr::V6(a) => context.update(&a.ip().octets()),
    }
    context.update(&from.port().to_be_bytes());
    context.update(hello.before_cookie());
    context.update(hello.after_cookie());
    let tag = context.sign();
    let mut out = [0u8; COOKIE_LEN];
    out.copy_from_slice(&tag.as_ref()[..COOKIE_LEN]);
    out
}

/// The HelloVerifyRequest datagram answering `hello` with `cookie`: in a
/// record of DTLS 1.0 with the hello's record sequence number, as RFC 6347
/// §4.2.1 asks (so a client that retransmitted its hello can match the
/// answer), message sequence 0.
pub(super) fn hello_verify_request(hello: &ClientHello<'_>, cookie: &[u8]) -> Vec<u8> {
    const DTLS_1_0: [u8; 2] = [0xfe, 0xff];
    let body_len = 2 + 1 + cookie.len();
    let mut d = Vec::with_capacity(13 + 12 + body_len);
    d.push(22); // handshake
    d.extend_from_slice(&DTLS_1_0);
    d.extend_from_slice(&[0, 0]); // epoch
    d.extend_from_slice(&hello.record_sequence.to_be_bytes()[2..]);
    d.extend_from_slice(&((12 + body_len) as u16).to_be_bytes());
    let len = (body_len as u32).to_be_bytes();
    d.push(3); // hello_verify_request
    d.extend_from_slice(&len[1..]);
    d.extend_from_slice(&[0, 0]); // message sequence
    d.extend_from_slice(&[0, 0, 0]); // fragment offset
    d.extend_from_slice(&len[1..]); // fragment length
    d.extend_from_slice(&DTLS_1_0);
    d.push(cookie.len() as u8);
    d.extend_from_slice(cookie);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::dtls::prefilter::{client_hello_datagram, inspect, Datagram};

    fn counting() -> Secrets {
        let mut n = 0u8;
        Box::new(move || {
            n += 1;
            [n; 32]
        })
    }

    fn hello(d: &[u8]) -> ClientHello<'_> {
        match inspect(d) {
            Some(Datagram::Hello(h)) => h,
            other => panic!("not a hello: {other:?}"),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The second hello as a client sends it: the first with the cookie.
    fn returned(first: &[u8], cookie: &[u8]) -> Vec<u8> {
        let h = hello(first);
        let mut d = client_hello_datagram(cookie, &h.suites().collect::<Vec<_>>(), &[]);
        // same random as `first` (client_hello_datagram uses a fixed one)
        d[13 + 12 + 2..13 + 12 + 34].copy_from_slice(&first[13 + 12 + 2..13 + 12 + 34]);
        d
    }

    #[test]
    fn a_cookie_verifies_for_its_address_and_hello_only() {
        let t0 = Instant::now();
        let mut jar = CookieJar::new(t0, counting());
        let first = client_hello_datagram(&[], &[0xc0a8], &[]);
        let cookie = jar.issue(t0, addr(1), &hello(&first));
        let second = returned(&first, &cookie);
        assert!(jar.verify(t0, addr(1), &hello(&second)));
        assert!(!jar.verify(t0, addr(2), &hello(&second)), "another port");
        let other_suites = client_hello_datagram(&cookie, &[0xc0a8, 0x00a8], &[]);
        assert!(
            !jar.verify(t0, addr(1), &hello(&other_suites)),
            "other parameters"
        );
        let mut tampered = cookie;
        tampered[0] ^= 1;
        assert!(!jar.verify(t0, addr(1), &hello(&returned(&first, &tampered))));
        assert!(!jar.verify(t0, addr(1), &hello(&returned(&first, &cookie[..19]))));
    }

    #[test]
    fn a_cookie_lives_one_to_two_periods() {
        let t0 = Instant::now();
        let mut jar = CookieJar::new(t0, counting());
        let first = client_hello_datagram(&[], &[0xc0a8], &[]);
        let cookie = jar.issue(t0, addr(1), &hello(&first));
        let second = returned(&first, &cookie);
        assert!(
            jar.verify(t0 + ROTATE_EVERY, addr(1), &hello(&second)),
            "previous secret"
        );
        assert!(
            !jar.verify(t0 + 2 * ROTATE_EVERY, addr(1), &hello(&second)),
            "two rotations"
        );
        let mut idle = CookieJar::new(t0, counting());
        let cookie = idle.issue(t0, addr(1), &hello(&first));
        let second = returned(&first, &cookie);
        assert!(
            !idle.verify(
                t0 + 2 * ROTATE_EVERY + Duration::from_secs(1),
                addr(1),
                &hello(&second)
            ),
            "a long idle listener forgets both secrets at once"
        );
    }

    #[test]
    fn the_hello_verify_request_echoes_the_record_sequence() {
        let mut first = client_hello_datagram(&[], &[0xc0a8], &[]);
        first[10] = 7; // record sequence number 7
        let hvr = hello_verify_request(&hello(&first), &[0xab; COOKIE_LEN]);
        assert_eq!(&hvr[..3], &[22, 0xfe, 0xff]);
        assert_eq!(&hvr[5..11], &[0, 0, 0, 0, 0, 7]);
        assert_eq!(
            usize::from(u16::from_be_bytes([hvr[11], hvr[12]])),
            hvr.len() - 13
        );
        assert_eq!(hvr[13], 3);
        assert_eq!(
            &hvr[hvr.len() - COOKIE_LEN - 3..hvr.len() - COOKIE_LEN],
            &[0xfe, 0xff, 20]
        );
        assert_eq!(&hvr[hvr.len() - COOKIE_LEN..], &[0xab; COOKIE_LEN]);
    }
}
