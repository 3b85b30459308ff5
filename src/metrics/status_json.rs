//! `/status.json`: the figures of `/status` for a program, chiefly the
//! status page (`admin/page.html`), which renders itself from it every few
//! seconds. Counters are totals since start: the page works out rates from
//! two readings, so the daemon keeps no history for it.
//!
//! It names the newest dead letters (id, topic, size, when, why) but never a
//! payload: the TCP endpoint has no authentication, and messages are read
//! only through the admin socket.

use super::{Metrics, Verdict};
use crate::clock::now_ms;
use crate::uplink::properties::rfc3339_ms;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

/// Dead letters the page shows.
pub const NEWEST_DEAD_LETTERS: usize = 5;

pub(super) fn status_json(m: &Metrics, verdict: &Verdict) -> Value {
    let now = now_ms();
    let s = m.queue.stats();
    let (depth, bytes) = m.queue.depth();
    let oldest_age_s = m
        .queue
        .oldest_received_ms()
        .map(|t| now.saturating_sub(t) as f64 / 1000.0);
    let uplink = match m.uplink.get() {
        Some(u) => {
            let us = &u.stats;
            let connected = us.connected.load(Relaxed);
            let broker = match connected {
                true => us.broker.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                false => u.broker.clone(),
            };
            let version = match (connected, us.version.load(Relaxed)) {
                (false, _) => Value::Null,
                (true, 5) => json!("5"),
                (true, _) => json!("3.1.1"),
            };
            let last_error = us
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            json!({
                "state": if connected { "connected" } else { "disconnected" },
                "broker": broker,
                "protocol": version,
                "connects": us.connects.load(Relaxed),
                "connection_failures": us.connection_failures.load(Relaxed),
                "published": us.published.load(Relaxed),
                "acked": us.acked.load(Relaxed),
                "resent": us.resent.load(Relaxed),
                "last_error": last_error,
            })
        }
        None => json!({ "state": "starting" }),
    };
    let (mut datagrams, mut requests, mut stored) = (0u64, 0u64, 0u64);
    for t in m.transports() {
        datagrams += t.exchange.datagrams;
        requests += t.exchange.requests;
        stored += t.exchange.stored;
    }
    let newest: Vec<Value> = m
        .queue
        .newest_dead_letters(NEWEST_DEAD_LETTERS)
        .iter()
        .map(|d| {
            json!({
                "id": d.seq,
                "topic": d.stored.message.topic,
                "size": d.stored.message.payload.len(),
                "dead_at": rfc3339_ms(d.dead_ms),
                "reason": d.reason,
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": rfc3339_ms(now),
        "uptime_s": now.saturating_sub(m.started_ms) / 1000,
        "health": {
            "healthy": verdict.healthy(),
            "problems": verdict.wedged.iter().chain(&verdict.degraded).collect::<Vec<_>>(),
        },
        "queue": {
            "messages": depth,
            "bytes": bytes,
            "disk_bytes": m.queue.size_on_disk(),
            "oldest_age_s": oldest_age_s,
            "writable": m.queue.is_available() && s.commit.last_ok(),
            "stored": s.appended.load(Relaxed),
            "removed": s.removed.load(Relaxed),
        },
        "coap": {
            "datagrams": datagrams,
            "requests": requests,
            "stored": stored,
        },
        "uplink": uplink,
        "dead_letters": {
            "count": s.dead_letters.load(Relaxed),
            "newest": newest,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Qos};
    use crate::metrics::Thresholds;
    use crate::store::{spawn_committer, Command, Limits, OnFull, Queue};
    use tokio::sync::{mpsc, oneshot};

    /// A queue with one message queued and one dead (payload "secret").
    fn queue_with_a_dead_letter(dir: &std::path::Path) -> Queue {
        let limits = Limits {
            max_messages: 100,
            max_bytes: 1 << 20,
            on_full: OnFull::Reject,
        };
        let queue = Queue::open(&dir.join("q"), limits).expect("opens").queue;
        let (store, thread) = spawn_committer::<()>(queue.clone(), 8, 8).expect("committer");
        let (tx, mut rx) = mpsc::unbounded_channel();
        for topic in ["t/dead", "t/queued"] {
            let command = Command::Append {
                messages: vec![Message {
                    topic: topic.into(),
                    payload: b"secret".to_vec(),
                    qos: Qos::AtLeastOnce,
                    retain: false,
                    meta: Default::default(),
                }],
                received_ms: now_ms(),
                recall: Vec::new(),
                receipt: (),
                reply: tx.clone(),
            };
            store.blocking_send(command).expect("committer alive");
            rx.blocking_recv().expect("stored");
        }
        let first = queue.reader().position();
        let reason = "refused".to_string();
        store
            .blocking_send(Command::DeadLetter { seq: first, reason })
            .expect("committer alive");
        let (done, wait) = oneshot::channel();
        store
            .blocking_send(Command::Barrier(done))
            .expect("committer alive");
        wait.blocking_recv().expect("barrier");
        drop(store);
        thread.join().expect("committer ends");
        queue
    }

    #[test]
    fn the_page_gets_queue_uplink_and_the_newest_dead_letters_but_never_a_payload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new(
            queue_with_a_dead_letter(dir.path()),
            || Some(0),
            Thresholds::default(),
        );
        let (verdict, value) = m.status_json();
        assert_eq!(value["health"]["healthy"], verdict.healthy());
        assert_eq!(value["queue"]["messages"], 1);
        assert_eq!(value["queue"]["stored"], 2);
        assert!(value["queue"]["oldest_age_s"].is_number());
        assert_eq!(value["uplink"]["state"], "starting");
        assert_eq!(value["dead_letters"]["count"], 1);
        let newest = &value["dead_letters"]["newest"][0];
        assert_eq!(newest["topic"], "t/dead");
        assert_eq!(newest["size"], 6);
        assert_eq!(newest["reason"], "refused");
        assert!(!value.to_string().contains("secret"), "{value}");
    }
}
