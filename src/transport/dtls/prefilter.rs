//! A look at each datagram before anything else parses it.
//!
//! Only well-framed datagrams pass: whole records, and in plaintext
//! (epoch 0) handshake records only unfragmented messages of the kinds a
//! client sends (ClientHello, Certificate, CertificateVerify,
//! ClientKeyExchange), a ClientHello whose every vector fits and that has no
//! session id, a ClientKeyExchange of at least two bytes. Encrypted records
//! are the DTLS library's business.
//!
//! Why, with rtc-dtls: it parses every handshake message by its type byte,
//! whoever sent it, and its ClientHello parser reads a session id's length
//! but not its bytes (a new handshake has none, and our server never
//! resumes one). webrtc-dtls 0.12, before it, had four parser panics behind
//! such messages (`regressions/`). The `dtls_records` fuzz target checks
//! that nothing that passes here can panic rtc-dtls's parsers.
//!
//! The same walk gives the demultiplexer the ClientHello it answers without
//! keeping state (`cookie.rs`): its parameters, cookie and cipher suites.

const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const CERTIFICATE: u8 = 11;
const CERTIFICATE_VERIFY: u8 = 15;
const CLIENT_KEY_EXCHANGE: u8 = 16;

/// What a datagram that may pass is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Datagram<'a> {
    /// Starts with a ClientHello: a new handshake, or the second ClientHello
    /// of one (with the cookie).
    Hello(ClientHello<'a>),
    /// Anything else well framed.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClientHello<'a> {
    pub has_cookie: bool,
    /// The datagram is this one record holding this one message, as
    /// clients send a ClientHello; only such a hello starts a session.
    pub alone: bool,
    /// The record's sequence number (48 bits).
    pub record_sequence: u64,
    /// The handshake message's sequence number: 0 for a first ClientHello,
    /// 1 for the one that returns a cookie.
    pub message_sequence: u16,
    /// The message body (after the 12-byte handshake header).
    body: &'a [u8],
    /// Where in `body` the cookie's length byte is.
    cookie_at: usize,
    /// Where in `body` the extensions (or the end) begin.
    extensions_at: usize,
}

impl<'a> ClientHello<'a> {
    /// The offered cipher suites, in the client's order of preference.
    pub fn suites(&self) -> impl Iterator<Item = u16> + 'a {
        self.suites_bytes()
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }

    pub fn cookie(&self) -> &'a [u8] {
        let n = usize::from(self.body[self.cookie_at]);
        &self.body[self.cookie_at + 1..self.cookie_at + 1 + n]
    }

    /// version, random and session id: what precedes the cookie.
    pub fn before_cookie(&self) -> &'a [u8] {
        &self.body[..self.cookie_at]
    }

    /// cipher suites and compression methods (with their lengths): what
    /// follows the cookie, up to the extensions.
    pub fn after_cookie(&self) -> &'a [u8] {
        &self.body[self.cookie_at + 1 + self.cookie().len()..self.extensions_at]
    }

    /// Everything after the cookie, extensions included.
    pub fn rest(&self) -> &'a [u8] {
        &self.body[self.cookie_at + 1 + self.cookie().len()..]
    }

    fn suites_bytes(&self) -> &'a [u8] {
        let after = self.after_cookie();
        let n = usize::from(u16::from_be_bytes([after[0], after[1]]));
        &after[2..2 + n]
    }
}

/// `None`: drop the datagram.
pub(super) fn inspect(d: &[u8]) -> Option<Datagram<'_>> {
    let mut first = None;
    let mut off = 0;
    while off < d.len() {
        let header = d.get(off..off + RECORD_HEADER)?;
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let body = d.get(off + RECORD_HEADER..off + RECORD_HEADER + len)?;
        let epoch = u16::from_be_bytes([header[3], header[4]]);
        let hello = if header[0] == CONTENT_HANDSHAKE && epoch == 0 {
            handshake_record(body)?
        } else {
            None
        };
        if off == 0 {
            first = Some(hello.map_or(Datagram::Other, |mut hello| {
                hello.record_sequence = u48(&header[5..11]);
                hello.alone &= RECORD_HEADER + len == d.len();
                Datagram::Hello(hello)
            }));
        }
        off += RECORD_HEADER + len;
    }
    first
}

/// A plaintext handshake record: `None` to drop it, else its first message
/// if that is a ClientHello.
fn handshake_record(mut r: &[u8]) -> Option<Option<ClientHello<'_>>> {
    let mut hello = None;
    let mut first = true;
    while !r.is_empty() {
        let header = r.get(..HANDSHAKE_HEADER)?;
        let (kind, length) = (header[0], u24(&header[1..4]));
        let (fragment_offset, fragment_length) = (u24(&header[6..9]), u24(&header[9..12]));
        if fragment_offset != 0 || fragment_length != length {
            return None;
        }
        let body = r.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + length)?;
        match kind {
            CLIENT_HELLO => {
                let mut parsed = client_hello(body)?;
                if first {
                    parsed.message_sequence = u16::from_be_bytes([header[4], header[5]]);
                    parsed.alone = HANDSHAKE_HEADER + length == r.len();
                    hello = Some(parsed);
                }
            }
            CLIENT_KEY_EXCHANGE if body.len() < 2 => return None,
            CLIENT_KEY_EXCHANGE | CERTIFICATE | CERTIFICATE_VERIFY => {}
            // Server messages (and unknown kinds) never come from a client.
            _ => return None,
        }
        first = false;
        r = &r[HANDSHAKE_HEADER + length..];
    }
    Some(hello)
}

/// version(2) random(32) session_id<1> cookie<1> suites<2> compression<1>
/// [extensions<2>, each type(2) length(2) data]
fn client_hello(b: &[u8]) -> Option<ClientHello<'_>> {
    let mut p = 34;
    // rtc-dtls 0.21 (and webrtc-dtls 0.12, where it ended in a panic at
    // handshake_message_client_hello.rs:181) reads the session id's length
    // but not its bytes, so it would parse the rest from the wrong place.
    // Our server never resumes sessions, so a new handshake has none.
    if !vec8(b, &mut p)?.is_empty() {
        return None;
    }
    let cookie_at = p;
    let cookie = vec8(b, &mut p)?;
    let suites = vec16(b, &mut p)?;
    let _compression = vec8(b, &mut p)?;
    let extensions_at = p;
    if p < b.len() {
        let mut extensions = vec16(b, &mut p)?;
        while !extensions.is_empty() {
            let header = extensions.get(..4)?;
            let n = usize::from(u16::from_be_bytes([header[2], header[3]]));
            extensions = extensions.get(4 + n..)?;
        }
        if p != b.len() {
            return None;
        }
    }
    if suites.len() % 2 != 0 {
        return None;
    }
    Some(ClientHello {
        has_cookie: !cookie.is_empty(),
        alone: false,
        record_sequence: 0,
        message_sequence: 0,
        body: b,
        cookie_at,
        extensions_at,
    })
}

fn vec8<'a>(b: &'a [u8], p: &mut usize) -> Option<&'a [u8]> {
    let n = usize::from(*b.get(*p)?);
    let v = b.get(*p + 1..*p + 1 + n)?;
    *p += 1 + n;
    Some(v)
}

fn vec16<'a>(b: &'a [u8], p: &mut usize) -> Option<&'a [u8]> {
    let n = usize::from(u16::from_be_bytes([*b.get(*p)?, *b.get(*p + 1)?]));
    let v = b.get(*p + 2..*p + 2 + n)?;
    *p += 2 + n;
    Some(v)
}

fn u48(b: &[u8]) -> u64 {
    b.iter().fold(0, |n, &byte| (n << 8) | u64::from(byte))
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

/// A minimal well-formed ClientHello datagram, for tests here and in the
/// demultiplexer.
#[cfg(test)]
pub(super) fn client_hello_datagram(cookie: &[u8], suites: &[u16], extensions: &[u8]) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    if !extensions.is_empty() {
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
    }
    let len = body.len() as u32;
    let mut hs = vec![CLIENT_HELLO];
    hs.extend_from_slice(&len.to_be_bytes()[1..]);
    hs.extend_from_slice(&[0, 0, 0, 0, 0]);
    hs.extend_from_slice(&len.to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut d = vec![CONTENT_HANDSHAKE, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
    d.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    d.extend_from_slice(&hs);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_passes_with_its_suites_in_order_and_its_cookie() {
        let d = client_hello_datagram(&[], &[0xc0a8, 0x00a8], &[0, 10, 0, 2, 0, 23]);
        let Some(Datagram::Hello(hello)) = inspect(&d) else {
            panic!("not a hello: {:?}", inspect(&d));
        };
        assert!(!hello.has_cookie);
        assert_eq!(hello.suites().collect::<Vec<_>>(), vec![0xc0a8, 0x00a8]);
        let d = client_hello_datagram(&[1, 2, 3], &[0xc0a8], &[]);
        assert!(matches!(inspect(&d), Some(Datagram::Hello(h)) if h.has_cookie));
    }

    #[test]
    fn a_client_hello_shows_what_its_cookie_binds() {
        let d = client_hello_datagram(&[9, 9], &[0xc0a8], &[0, 23, 0, 0]);
        let Some(Datagram::Hello(hello)) = inspect(&d) else {
            panic!("not a hello");
        };
        assert!(hello.alone);
        assert_eq!(hello.cookie(), &[9, 9]);
        assert_eq!(hello.before_cookie().len(), 2 + 32 + 1);
        assert_eq!(hello.after_cookie(), &[0, 2, 0xc0, 0xa8, 1, 0]);
        assert_eq!(hello.rest(), &[0, 2, 0xc0, 0xa8, 1, 0, 0, 4, 0, 23, 0, 0]);
        let mut two = d.clone();
        two.extend_from_slice(&d);
        assert!(matches!(inspect(&two), Some(Datagram::Hello(h)) if !h.alone));
    }

    #[test]
    fn a_truncated_extension_header_is_dropped() {
        // One extension byte: the header the library indexes is cut short.
        let d = client_hello_datagram(&[], &[0xc0a8], &[0]);
        assert_eq!(inspect(&d), None);
        let d = client_hello_datagram(&[], &[0xc0a8], &[0, 10, 0, 9, 1]);
        assert_eq!(inspect(&d), None);
    }

    #[test]
    fn a_short_client_key_exchange_is_dropped() {
        for body in [&[][..], &[0][..]] {
            let mut d = vec![CONTENT_HANDSHAKE, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
            d.extend_from_slice(&((12 + body.len()) as u16).to_be_bytes());
            d.extend_from_slice(&[
                CLIENT_KEY_EXCHANGE,
                0,
                0,
                body.len() as u8,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
            ]);
            d.push(body.len() as u8);
            d.extend_from_slice(body);
            assert_eq!(inspect(&d), None, "{body:?}");
        }
    }

    #[test]
    fn truncated_and_fragmented_records_are_dropped() {
        let d = client_hello_datagram(&[], &[0xc0a8], &[]);
        for cut in 0..d.len() {
            assert_eq!(inspect(&d[..cut]).filter(|_| cut > 0), None, "cut at {cut}");
        }
        let mut fragmented = d.clone();
        fragmented[RECORD_HEADER + 8] = 1; // fragment offset
        assert_eq!(inspect(&fragmented), None);
    }

    #[test]
    fn server_handshake_messages_from_a_client_are_dropped() {
        // Found by the dtls_records fuzz target: a ServerHello-typed message
        // panics webrtc-dtls 0.12's parser (handshake_message_server_hello.rs:137).
        let crash = include_bytes!("regressions/server-hello-from-a-client.bin");
        assert_eq!(inspect(crash), None);
    }

    #[test]
    fn a_client_hello_with_a_session_id_is_dropped() {
        // Found by the dtls_records fuzz target: the library skips only the
        // session id's length byte and then panics in the extension loop.
        let crash = include_bytes!("regressions/client-hello-with-session-id.bin");
        assert_eq!(inspect(crash), None);
    }

    #[test]
    fn encrypted_records_pass_untouched() {
        let d = [23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5, 0, 3, 9, 9, 9];
        assert_eq!(inspect(&d), Some(Datagram::Other));
    }
}
