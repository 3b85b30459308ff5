//! Handing a ClientHello that returned our cookie to rtc-dtls.
//!
//! rtc-dtls's server always runs a cookie exchange of its own: a new
//! connection takes a first ClientHello (message 0), answers it with a
//! HelloVerifyRequest carrying a random cookie kept in the connection, and
//! goes on only with a ClientHello (message 1) that returns that cookie. The
//! cookie cannot be set from outside; it is the first [`COOKIE_LEN`] random
//! bytes the new connection draws from its crypto provider.
//!
//! So the provider here ([`provider`]) is ring's, except that inside
//! [`with_cookie`] the first draw of exactly [`COOKIE_LEN`] bytes yields the
//! cookie given, once. A session then starts by replaying the exchange the
//! device already did with `cookie.rs`: its ClientHello without the cookie
//! as message 0 ([`first_hello`]; the connection's own HelloVerifyRequest is
//! thrown away, the device has ours), then its ClientHello exactly as sent.
//! The handshake transcript covers the second ClientHello onwards (RFC 6347
//! §4.2.1), the very bytes the device sent, so both sides' Finished agree.
//!
//! [`with_cookie`] says whether the cookie was drawn: if a later rtc-dtls
//! drew it differently the session would not start, loudly, rather than
//! hang. The exact version pin in Cargo.toml and the handshake tests in
//! `session.rs` guard this.

use super::cookie::COOKIE_LEN;
use super::prefilter::ClientHello;
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::crypto_provider::{CryptoError, RTCCrypto, RTCCryptoProvider, RTCRandom};
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    static NEXT_COOKIE: Cell<Option<[u8; COOKIE_LEN]>> = const { Cell::new(None) };
}

/// ring's crypto, with the cookie draw described above.
struct Provider {
    ring: RingProvider,
    random: Random,
}

struct Random;

impl RTCRandom for Random {
    fn fill(&self, output: &mut [u8]) -> Result<(), CryptoError> {
        if output.len() == COOKIE_LEN {
            if let Some(cookie) = NEXT_COOKIE.with(Cell::take) {
                output.copy_from_slice(&cookie);
                return Ok(());
            }
        }
        RingProvider::new().random().fill(output)
    }
}

impl RTCCryptoProvider for Provider {
    fn name(&self) -> &'static str {
        "ring (coap2mqtt cookie handoff)"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        self.ring.crypto()
    }

    fn random(&self) -> &dyn RTCRandom {
        &self.random
    }
}

/// The crypto provider of every server config.
pub(super) fn provider() -> Arc<dyn RTCCryptoProvider> {
    Arc::new(Provider {
        ring: RingProvider::new(),
        random: Random,
    })
}

/// Runs `f` with `cookie` as the next cookie a new connection draws;
/// returns what `f` returned and whether the cookie was drawn.
pub(super) fn with_cookie<R>(cookie: [u8; COOKIE_LEN], f: impl FnOnce() -> R) -> (R, bool) {
    NEXT_COOKIE.with(|next| next.set(Some(cookie)));
    let r = f();
    let left = NEXT_COOKIE.with(Cell::take);
    (r, left.is_none())
}

/// The device's first ClientHello, rebuilt from the one that returned the
/// cookie: the same record without the cookie, as message 0, one record
/// sequence number earlier. `None` when the hello is not one record holding
/// just itself as message 1 with a sequence number above 0, as every client
/// sends it after a HelloVerifyRequest.
pub(super) fn first_hello(datagram: &[u8], hello: &ClientHello<'_>) -> Option<Vec<u8>> {
    if !hello.alone || hello.message_sequence != 1 || hello.record_sequence == 0 {
        return None;
    }
    let before = hello.before_cookie();
    let rest = hello.rest();
    let body_len = before.len() + 1 + rest.len();
    let mut d = Vec::with_capacity(13 + 12 + body_len);
    d.extend_from_slice(datagram.get(..5)?); // type, version, epoch
    d.extend_from_slice(&(hello.record_sequence - 1).to_be_bytes()[2..]);
    d.extend_from_slice(&u16::try_from(12 + body_len).ok()?.to_be_bytes());
    let len = u32::try_from(body_len).ok()?.to_be_bytes();
    d.push(1); // client_hello
    d.extend_from_slice(&len[1..]);
    d.extend_from_slice(&[0, 0]); // message sequence
    d.extend_from_slice(&[0, 0, 0]);
    d.extend_from_slice(&len[1..]);
    d.extend_from_slice(before);
    d.push(0); // no cookie
    d.extend_from_slice(rest);
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::dtls::prefilter::{client_hello_datagram, inspect, Datagram};

    #[test]
    fn the_cookie_is_drawn_once_by_a_draw_of_its_length() {
        let random = provider();
        let (drawn, taken) = with_cookie([7; COOKIE_LEN], || {
            let mut other = [0u8; 28];
            random.random().fill(&mut other).expect("fill");
            let mut cookie = [0u8; COOKIE_LEN];
            random.random().fill(&mut cookie).expect("fill");
            let mut again = [0u8; COOKIE_LEN];
            random.random().fill(&mut again).expect("fill");
            (cookie, again)
        });
        assert!(taken);
        assert_eq!(drawn.0, [7; COOKIE_LEN]);
        assert_ne!(drawn.1, [7; COOKIE_LEN]);
        let ((), taken) = with_cookie([7; COOKIE_LEN], || ());
        assert!(!taken, "not drawn: said so, and not left for later");
        let mut later = [0u8; COOKIE_LEN];
        random.random().fill(&mut later).expect("fill");
        assert_ne!(later, [7; COOKIE_LEN]);
    }

    #[test]
    fn the_first_hello_is_the_second_without_its_cookie() {
        let mut second = client_hello_datagram(&[5; COOKIE_LEN], &[0xc0a8], &[0, 23, 0, 0]);
        second[13 + 5] = 1; // message sequence 1
        second[10] = 1; // record sequence 1
        let Some(Datagram::Hello(hello)) = inspect(&second) else {
            panic!("not a hello");
        };
        let first = first_hello(&second, &hello).expect("rebuilt");
        let expected = client_hello_datagram(&[], &[0xc0a8], &[0, 23, 0, 0]);
        assert_eq!(first, expected);
        let mut message_zero = second.clone();
        message_zero[13 + 5] = 0;
        let Some(Datagram::Hello(hello)) = inspect(&message_zero) else {
            panic!("not a hello");
        };
        assert_eq!(first_hello(&message_zero, &hello), None);
    }
}
