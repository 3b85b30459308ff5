//! Spoofed DTLS ClientHellos for the flood figure: the first datagram of a
//! PSK handshake (no cookie), each from its own source address and port
//! on 127.0.0.0/8, as an attacker forging sources would send them. The
//! gateway must answer each with a stateless HelloVerifyRequest and keep
//! nothing. Written here from RFC 6347 §4.2, apart from the daemon's code.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// A DTLS 1.2 record holding a ClientHello: random `seed`, no session id,
/// no cookie, one suite (TLS_PSK_WITH_AES_128_CCM_8), null compression.
pub fn client_hello(seed: u32) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&seed.to_be_bytes());
    body.extend_from_slice(&[0x3c; 28]);
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&[0, 2, 0xc0, 0xa8]);
    body.extend_from_slice(&[1, 0]);
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

/// Sends `n` ClientHellos to `target`, each from a new socket on its own
/// loopback address (127.1.0.0 upwards); returns how many were sent.
pub fn flood(target: SocketAddr, n: u32) -> u32 {
    let mut sent = 0;
    for i in 0..n {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + i);
        let Ok(socket) = UdpSocket::bind((ip, 0)) else {
            continue;
        };
        if socket.send_to(&client_hello(i), target).is_ok() {
            sent += 1;
        }
    }
    sent
}
