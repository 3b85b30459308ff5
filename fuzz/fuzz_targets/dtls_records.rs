//! Datagrams from unauthenticated peers: whatever the listener's prefilter
//! lets through must not panic rtc-dtls. Each input is checked twice: with
//! the record and handshake parsers on their own (epoch-0 handshake records
//! parsed the way the library does after reassembly: each message's header
//! and body), and fed whole to a server connection, as a session gets every
//! datagram of its device after the cookie exchange.
#![no_main]

use bytes::BytesMut;
use coap2mqtt::transport::dtls::passes_prefilter;
use libfuzzer_sys::fuzz_target;
use rtc_dtls::cipher_suite::CipherSuiteId;
use rtc_dtls::config::{ConfigBuilder, HandshakeConfig};
use rtc_dtls::content::ContentType;
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::endpoint::Endpoint;
use rtc_dtls::handshake::Handshake;
use rtc_dtls::record_layer::record_layer_header::RecordLayerHeader;
use rtc_shared::TransportProtocol;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;

fn config() -> Arc<HandshakeConfig> {
    static CONFIG: OnceLock<Arc<HandshakeConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                ConfigBuilder::default()
                    .with_crypto_provider(Arc::new(RingProvider::new()))
                    .with_cipher_suites(vec![
                        CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
                        CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
                    ])
                    .with_psk(Some(Arc::new(|_: &[u8]| Ok(b"fuzz".to_vec()))))
                    .with_insecure_skip_verify(true)
                    .build(false, None)
                    .expect("server config"),
            )
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    if !passes_prefilter(data) {
        return;
    }
    let mut rest = data;
    while rest.len() >= RECORD_HEADER {
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let end = (RECORD_HEADER + len).min(rest.len());
        let record = &rest[..end];
        rest = &rest[end..];
        let Ok(header) = RecordLayerHeader::unmarshal(&mut &record[..]) else {
            continue;
        };
        if header.content_type == ContentType::Handshake && header.epoch == 0 {
            let mut messages = &record[RECORD_HEADER..];
            while messages.len() >= HANDSHAKE_HEADER {
                let len = u32::from_be_bytes([0, messages[1], messages[2], messages[3]]) as usize;
                let end = (HANDSHAKE_HEADER + len).min(messages.len());
                let _ = Handshake::unmarshal(&mut &messages[..end]);
                messages = &messages[end..];
            }
        }
    }
    let local = SocketAddr::from(([127, 0, 0, 1], 5684));
    let peer = SocketAddr::from(([127, 0, 0, 2], 5684));
    let mut endpoint = Endpoint::new(local, TransportProtocol::UDP, Some(config()));
    let now = Instant::now();
    let _ = endpoint.read(now, peer, None, BytesMut::from(data));
    while endpoint.poll_transmit().is_some() {}
    let _ = endpoint.handle_timeout(peer, now + std::time::Duration::from_secs(2));
});
