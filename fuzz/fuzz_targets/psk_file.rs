//! Any text as the PSK file: parsed into keys or refused with problems,
//! never a panic; every key it yields is non-empty.
#![no_main]

use coap2mqtt::config::psk;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match psk::parse(&text, Path::new("psk.toml")) {
        Ok(keys) => {
            for identity in keys.identities() {
                let key = keys.get(identity.as_bytes()).expect("listed identity has a key");
                assert!(!key.is_empty());
            }
        }
        Err(errors) => assert!(!errors.problems.is_empty()),
    }
    let _ = psk::decode_key(&text);
});
