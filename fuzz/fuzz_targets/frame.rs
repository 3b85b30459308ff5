//! Bytes read back from the queue's files: every decoder may refuse them,
//! none may panic, and a batch that decodes survives re-encoding unchanged.
#![no_main]

use coap2mqtt::store::frame::{self, Acks, Batch, DeadLetter, Stored};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a whole frame (header and CRC), and as a body that passed its CRC.
    let _ = frame::open_frame(data);
    let _ = Acks::decode(data);
    let _ = DeadLetter::decode(data);
    let _ = frame::decode_forget(data);
    if let Ok(batch) = Batch::decode(data) {
        let messages: Result<Vec<(u64, Stored)>, _> = batch.messages().collect();
        if let Ok(messages) = messages {
            let stored: Vec<Stored> = messages.iter().map(|(_, s)| s.clone()).collect();
            let again = frame::batch_body(batch.first_seq, &stored);
            let back: Vec<(u64, Stored)> = Batch::decode(&again)
                .expect("re-encoded batch decodes")
                .messages()
                .collect::<Result<_, _>>()
                .expect("re-encoded messages decode");
            assert_eq!(back, messages);
        }
    }
});
