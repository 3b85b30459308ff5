//! Bytes read back from the store: decoding may fail, never panic, and what
//! decodes survives an encode/decode round trip unchanged.
#![no_main]

use coap2mqtt::store::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(Record::decode(&record.encode()), Ok(record));
    }
});
