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
//!
//! The provider spares PSK handshakes one more thing. rtc-dtls's server
//! makes an ephemeral key pair (X25519 or P-256) as soon as it accepts a
//! ClientHello, whatever suite it then picks (flight0.rs of 0.21.1); the
//! pure PSK suites, the only PSK suites we offer, never use it. Generating
//! it took a fifth of the daemon's CPU per PSK handshake (perf, 10,000
//! handshakes). While a [`NoKeyExchange`] lives, as it does in `Session::start`
//! for hellos whose chosen suite is PSK, a key exchange started is a
//! placeholder that cannot complete: were it ever used, the handshake would
//! fail, never run with a known key.

use super::cookie::COOKIE_LEN;
use super::prefilter::ClientHello;
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::crypto_provider::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher,
    CryptoAlgorithm, CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac,
    PublicKey, RTCCrypto, RTCCryptoProvider, RTCRandom, SecretVec, SignatureScheme, SigningKey,
    StreamCipher, StreamCipherAlgorithm,
};
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    static NEXT_COOKIE: Cell<Option<[u8; COOKIE_LEN]>> = const { Cell::new(None) };
    static NO_KEY_EXCHANGE: Cell<bool> = const { Cell::new(false) };
    /// Placeholders handed out on this thread: what tests read to know a
    /// PSK handshake made no key pair.
    static PLACEHOLDERS: Cell<u64> = const { Cell::new(0) };
}

/// ring's crypto, with the cookie draw and the PSK handshakes' placeholder
/// key exchange described above.
struct Provider {
    crypto: Crypto,
    random: Random,
}

/// ring's crypto, but for [`RTCCrypto::start_key_exchange`] inside
/// a [`NoKeyExchange`].
struct Crypto(RingProvider);

/// What a PSK handshake gets for the key pair it does not use.
struct Placeholder {
    algorithm: KeyExchangeAlgorithm,
    public_key: [u8; 65],
}

impl ActiveKeyExchange for Placeholder {
    fn algorithm(&self) -> KeyExchangeAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &[u8] {
        match self.algorithm {
            KeyExchangeAlgorithm::X25519 => &self.public_key[..32],
            _ => &self.public_key,
        }
    }

    fn complete(self: Box<Self>, _peer_public_key: &[u8]) -> Result<SecretVec, CryptoError> {
        Err(CryptoError::UnsupportedAlgorithm(
            CryptoAlgorithm::KeyExchange(self.algorithm),
        ))
    }
}

impl RTCCrypto for Crypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.0.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0.crypto().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.0.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.0.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.0.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.0.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.0.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        if NO_KEY_EXCHANGE.with(Cell::get) {
            PLACEHOLDERS.with(|n| n.set(n.get() + 1));
            return Ok(Box::new(Placeholder {
                algorithm,
                public_key: [0; 65],
            }));
        }
        self.0.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.0.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.0.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.0
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
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
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        &self.random
    }
}

/// The crypto provider of every server config.
pub(super) fn provider() -> Arc<dyn RTCCryptoProvider> {
    Arc::new(Provider {
        crypto: Crypto(RingProvider::new()),
        random: Random,
    })
}

/// While one lives (on this thread), every key exchange started is a
/// placeholder: for the handshake of a hello whose suite is PSK (see the
/// module's doc).
pub(super) struct NoKeyExchange(());

impl NoKeyExchange {
    pub(super) fn enter() -> NoKeyExchange {
        NO_KEY_EXCHANGE.with(|flag| flag.set(true));
        NoKeyExchange(())
    }
}

impl Drop for NoKeyExchange {
    fn drop(&mut self) {
        NO_KEY_EXCHANGE.with(|flag| flag.set(false));
    }
}

/// How many placeholder key exchanges this thread has handed out.
#[cfg(test)]
pub(super) fn placeholders_made() -> u64 {
    PLACEHOLDERS.with(Cell::get)
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
    fn while_no_key_exchange_lives_a_key_exchange_is_a_placeholder_that_cannot_complete() {
        let provider = provider();
        let crypto = provider.crypto();
        let peer = crypto
            .start_key_exchange(KeyExchangeAlgorithm::X25519)
            .expect("a real one");
        assert_ne!(peer.public_key(), &[0u8; 32], "outside: a real key pair");
        let psk = NoKeyExchange::enter();
        let placeholder = crypto
            .start_key_exchange(KeyExchangeAlgorithm::X25519)
            .expect("a placeholder");
        drop(psk);
        assert_eq!(placeholder.public_key(), &[0u8; 32]);
        assert!(placeholder.complete(peer.public_key()).is_err());
        let after = crypto
            .start_key_exchange(KeyExchangeAlgorithm::P256)
            .expect("a real one");
        assert_eq!(after.public_key().len(), 65);
        assert_ne!(after.public_key(), &[0u8; 65], "after: real again");
        assert!(after.complete(&[4; 65]).is_err(), "not a point: refused");
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
