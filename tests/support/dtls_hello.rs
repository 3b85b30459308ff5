//! The first datagram of a DTLS handshake, for tests that flood or probe a
//! DTLS listener without a DTLS stack of their own.

/// A ClientHello as a device would send it first: no cookie, the PSK
/// CCM_8 suite, and random bytes.
pub fn client_hello(seed: u32) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&seed.to_be_bytes());
    body.extend_from_slice(&[0x5a; 28]);
    body.extend_from_slice(&[0, 0]); // session id, cookie
    body.extend_from_slice(&[0, 2, 0xc0, 0xa8]); // one suite
    body.extend_from_slice(&[1, 0]); // compression: null
    let len = (body.len() as u32).to_be_bytes();
    let mut handshake = vec![
        1, len[1], len[2], len[3], 0, 0, 0, 0, 0, len[1], len[2], len[3],
    ];
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}
