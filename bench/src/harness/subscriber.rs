//! The checking subscriber: a QoS 1 rumqttc client that counts what
//! arrives per run and checks it.
//!
//! Topics are `<root>/<run>/<device>`; payloads start with the device's
//! sequence number (8 bytes, big-endian, see `load::payload`), which every
//! device sends 1, 2, 3, ... in order. Per topic the subscriber therefore
//! knows a duplicate (a number seen before) and a reordering (a number
//! lower than the highest seen, not seen before) when it meets one.

use crate::load::unix_us;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one run (topic prefix) received.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunCount {
    /// Distinct messages.
    pub distinct: u64,
    pub duplicates: u64,
    /// Arrived after a higher sequence number of the same topic.
    pub out_of_order: u64,
    pub topics: u64,
    pub first_unix_us: u64,
    pub last_unix_us: u64,
    /// When each distinct message arrived (for windowed rates).
    #[serde(skip)]
    pub arrivals_us: Vec<u64>,
}

impl RunCount {
    /// Distinct messages that arrived at or before `unix_us`.
    pub fn delivered_by(&self, unix_us: u64) -> u64 {
        self.arrivals_us.partition_point(|&t| t <= unix_us) as u64
    }
}

#[derive(Default)]
struct Topic {
    highest: u64,
    /// Bit per sequence number seen.
    seen: Vec<u64>,
}

impl Topic {
    /// Returns (duplicate, out_of_order).
    fn note(&mut self, seq: u64) -> (bool, bool) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            return (true, false);
        }
        self.seen[word] |= 1 << bit;
        let reordered = seq < self.highest;
        self.highest = self.highest.max(seq);
        (false, reordered)
    }
}

#[derive(Default)]
struct State {
    runs: HashMap<String, RunCount>,
    topics: HashMap<String, Topic>,
    malformed: u64,
}

#[derive(Clone)]
pub struct Subscriber {
    state: Arc<Mutex<State>>,
    client: AsyncClient,
}

impl Subscriber {
    /// Connects to 127.0.0.1:`port` as `client_id` and subscribes to
    /// `filters` with QoS 1; returns once the broker confirmed. With
    /// `persistent`, the session survives a disconnect (clean_session off).
    pub async fn start(
        port: u16,
        client_id: &str,
        filters: &[&str],
        persistent: bool,
    ) -> anyhow::Result<Subscriber> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(!persistent)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(options, 64);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await?;
        }
        let state = Arc::new(Mutex::new(State::default()));
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel::<()>();
        let wanted = filters.len();
        let st = state.clone();
        tokio::spawn(async move {
            let mut subacks = 0;
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let now = unix_us();
                        let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                        s.record(&p.topic, &p.payload, now);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks >= wanted {
                            if let Some(tx) = subscribed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // The broker went away (the drain phase stops it):
                        // rumqttc reconnects on the next poll.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(15), subscribed_rx)
            .await
            .map_err(|_| anyhow::anyhow!("the subscriber got no SUBACK within 15 s"))??;
        Ok(Subscriber { state, client })
    }

    /// What `run` received so far, with its arrival times.
    pub fn run(&self, run: &str) -> RunCount {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.runs.get(run).cloned().unwrap_or_default()
    }

    fn distinct(&self, run: &str) -> u64 {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.runs.get(run).map_or(0, |r| r.distinct)
    }

    pub fn malformed(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .malformed
    }

    /// Waits until `run` has `expected` distinct messages, or nothing new
    /// arrived for `quiet`, or `limit` passed. Returns the count then.
    pub async fn wait_for(
        &self,
        run: &str,
        expected: u64,
        quiet: Duration,
        limit: Duration,
    ) -> RunCount {
        let started = Instant::now();
        let mut last_change = Instant::now();
        let mut last_seen = 0;
        loop {
            let distinct = self.distinct(run);
            if distinct >= expected || started.elapsed() >= limit {
                return self.run(run);
            }
            if distinct != last_seen {
                last_seen = distinct;
                last_change = Instant::now();
            } else if last_change.elapsed() >= quiet {
                return self.run(run);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// The load generator's sequence number in a payload: the first 8 bytes
/// (opaque payloads), bytes 6..14 of its CBOR map, or the `seq` member of
/// that map's JSON translation.
fn sequence_number(payload: &[u8]) -> Option<u64> {
    if let Some(json) = payload.strip_prefix(b"{\"seq\":") {
        let digits = json.iter().take_while(|b| b.is_ascii_digit()).count();
        return std::str::from_utf8(&json[..digits]).ok()?.parse().ok();
    }
    let at = match payload.starts_with(&[0xa2, 0x63, b's', b'e', b'q', 0x1b]) {
        true => 6,
        false => 0,
    };
    payload
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

impl State {
    fn record(&mut self, topic: &str, payload: &[u8], now: u64) {
        let Some((run_key, _device)) = topic.rsplit_once('/') else {
            self.malformed += 1;
            return;
        };
        let Some(seq) = sequence_number(payload) else {
            self.malformed += 1;
            return;
        };
        let new_topic = !self.topics.contains_key(topic);
        let (dup, reordered) = self.topics.entry(topic.to_owned()).or_default().note(seq);
        let run = self.runs.entry(run_key.to_owned()).or_default();
        if new_topic {
            run.topics += 1;
        }
        if run.first_unix_us == 0 {
            run.first_unix_us = now;
        }
        run.last_unix_us = now;
        if dup {
            run.duplicates += 1;
        } else {
            run.distinct += 1;
            run.arrivals_us.push(now);
        }
        if reordered {
            run.out_of_order += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_reordering_are_told_apart() {
        let mut s = State::default();
        for seq in [1u64, 2, 2, 4, 3] {
            s.record("bench/r1/d0", &seq.to_be_bytes(), 10);
        }
        let r = &s.runs["bench/r1"];
        assert_eq!(
            (r.distinct, r.duplicates, r.out_of_order, r.topics),
            (4, 1, 1, 1)
        );
    }
}
