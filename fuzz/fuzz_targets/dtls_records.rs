//! Datagrams from unauthenticated peers: whatever the demultiplexer's
//! prefilter lets through must not panic webrtc-dtls's record and handshake
//! parsers (two such panics exist in 0.12 for datagrams the prefilter drops).
//! Epoch-0 handshake records are parsed the way the library does after
//! reassembly: each message's handshake header and body on its own.
#![no_main]

use coap2mqtt::transport::dtls::passes_prefilter;
use libfuzzer_sys::fuzz_target;
use webrtc_dtls::content::ContentType;
use webrtc_dtls::handshake::Handshake;
use webrtc_dtls::record_layer::record_layer_header::RecordLayerHeader;

const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;

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
});
