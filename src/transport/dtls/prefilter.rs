//! A look at each datagram before webrtc-dtls sees it.
//!
//! Three parser panics in webrtc-dtls 0.12 are reachable with one
//! unauthenticated datagram: a ClientHello whose extension header is
//! truncated (handshake_message_client_hello.rs), a ClientKeyExchange of
//! zero or one byte (handshake_message_client_key_exchange.rs), and a
//! malformed ServerHello (handshake_message_server_hello.rs:137; found by
//! the `dtls_records` fuzz target): the library parses every handshake
//! message by its type byte, whoever sent it. So only well-framed datagrams
//! pass: whole records, and in plaintext (epoch 0) handshake records only
//! unfragmented messages of the kinds a client sends (ClientHello,
//! Certificate, CertificateVerify, ClientKeyExchange), a ClientHello whose
//! every vector fits, a ClientKeyExchange of at least two bytes. Encrypted
//! records are the library's business.
//!
//! The same walk tells the demultiplexer what it needs of a ClientHello:
//! whether it carries a cookie (the peer answered a HelloVerifyRequest, so
//! its address is real) and which cipher suites it offers, in its order.

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
    /// The cipher suite list, two bytes each, in the client's order.
    suites: &'a [u8],
}

impl ClientHello<'_> {
    /// The offered cipher suites, in the client's order of preference.
    pub fn suites(&self) -> impl Iterator<Item = u16> + '_ {
        self.suites
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
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
            first = Some(hello.map_or(Datagram::Other, Datagram::Hello));
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
                let parsed = client_hello(body)?;
                if first {
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
    // webrtc-dtls 0.12 reads the session id's length but not its bytes, so
    // for a non-empty one its parse (unlike ours) runs off into the rest and
    // reaches an unchecked index (handshake_message_client_hello.rs:181).
    // Its server never resumes sessions, so a new handshake has none.
    if !vec8(b, &mut p)?.is_empty() {
        return None;
    }
    let cookie = vec8(b, &mut p)?;
    let suites = vec16(b, &mut p)?;
    let _compression = vec8(b, &mut p)?;
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
        suites,
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
