//! What the consumer received, kept incrementally: how often each device
//! message arrived, and which probes did. Following the subscriber's tail
//! keeps a half-hour run (millions of messages) cheap to check.

use std::collections::{HashMap, HashSet};

use crate::support::subscriber::Subscriber;

#[derive(Default)]
pub struct Ledger {
    /// Raw position in the subscriber's log read so far.
    cursor: usize,
    /// (device, number) -> times delivered.
    pub delivered: HashMap<(usize, u64), u32>,
    pub probes: HashSet<u64>,
    /// Deliveries that are neither a device message nor a probe.
    pub strangers: Vec<String>,
}

impl Ledger {
    /// Reads what arrived since the last call.
    pub fn follow(&mut self, subscriber: &Subscriber) {
        let (tail, next) = subscriber.messages_from(self.cursor);
        self.cursor = next;
        for message in tail {
            let text = message.payload_str();
            if let Some(k) = text.strip_prefix("probe-").and_then(|k| k.parse().ok()) {
                self.probes.insert(k);
            } else if let Some(id) = parse_device_payload(&text) {
                *self.delivered.entry(id).or_default() += 1;
            } else {
                self.strangers.push(format!("{} {text}", message.topic));
            }
        }
    }

    pub fn total_deliveries(&self) -> u64 {
        self.delivered.values().map(|n| u64::from(*n)).sum()
    }
}

/// `d<device>-<number>` -> (device, number).
fn parse_device_payload(text: &str) -> Option<(usize, u64)> {
    let (device, number) = text.strip_prefix('d')?.split_once('-')?;
    Some((device.parse().ok()?, number.parse().ok()?))
}
