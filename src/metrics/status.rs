//! `/status` and `coap2mqtt status`: the figures as a short report for a
//! person. (Machines read `/metrics`, see `openmetrics.rs`.)

use super::transport::{code_name, MESSAGE_TYPES};
use super::{Metrics, Verdict};
use crate::clock::now_ms;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// 1.5 KiB, 3.2 MiB.
pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub(super) fn status(m: &Metrics, verdict: &Verdict) -> String {
    let mut o = String::new();
    let now = now_ms();
    let _ = writeln!(
        o,
        "coap2mqtt {}, up {}: {}",
        env!("CARGO_PKG_VERSION"),
        human_duration(now.saturating_sub(m.started_ms)),
        if verdict.healthy() {
            "healthy"
        } else {
            "UNHEALTHY"
        }
    );
    for reason in verdict.wedged.iter().chain(&verdict.degraded) {
        let _ = writeln!(o, "  ! {reason}");
    }

    let s = m.queue.stats();
    let (depth, bytes) = m.queue.depth();
    let oldest = match m.queue.oldest_received_ms() {
        Some(t) => format!(", oldest {} old", human_duration(now.saturating_sub(t))),
        None => String::new(),
    };
    let _ = writeln!(
        o,
        "\nqueue   {depth} messages ({}){oldest}; {} on disk; {} dead letters",
        human_bytes(bytes),
        human_bytes(m.queue.size_on_disk()),
        s.dead_letters.load(Relaxed)
    );
    let (_, sum_us, commits) = s.commit.latency_us.snapshot();
    let (_, sum_batch, _) = s.commit.batch_size.snapshot();
    let mean = |sum: u64| {
        if commits == 0 {
            0.0
        } else {
            sum as f64 / commits as f64
        }
    };
    let _ = writeln!(
        o,
        "store   {} stored, {} removed; {} commits ({} failed), {:.1} commands and {:.2} ms each on average{}",
        s.appended.load(Relaxed),
        s.removed.load(Relaxed),
        s.commits.load(Relaxed),
        s.commit_errors.load(Relaxed),
        mean(sum_batch),
        mean(sum_us) / 1000.0,
        if s.commit.last_ok() { "" } else { "; LAST COMMIT FAILED" }
    );
    let full = s.rejected_full.load(Relaxed) + s.dropped_oldest.load(Relaxed);
    if full > 0 {
        let _ = writeln!(
            o,
            "        queue full: {} refused, {} oldest dropped",
            s.rejected_full.load(Relaxed),
            s.dropped_oldest.load(Relaxed)
        );
    }

    match m.uplink.get() {
        Some(u) => {
            let us = &u.stats;
            let state = if us.connected.load(Relaxed) {
                "connected to"
            } else {
                "NOT connected to"
            };
            let _ = writeln!(
                o,
                "uplink  {state} {}; {} connects, {} failed attempts",
                u.broker,
                us.connects.load(Relaxed),
                us.connection_failures.load(Relaxed)
            );
            let _ = writeln!(
                o,
                "        {} published, {} acked, {} resent, {} dead-lettered",
                us.published.load(Relaxed),
                us.acked.load(Relaxed),
                us.resent.load(Relaxed),
                us.dead_lettered.load(Relaxed)
            );
            if let Some(error) = us
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                let _ = writeln!(o, "        last error: {error}");
            }
        }
        None => {
            let _ = writeln!(o, "uplink  starting");
        }
    }

    for t in m.transports() {
        let e = &t.exchange;
        let _ = writeln!(
            o,
            "coap    {}: {} datagrams, {} requests (CON {}, NON {}), {} stored",
            t.kind, e.datagrams, e.requests, t.requests[0], t.requests[1], e.stored
        );
        let mut responses = t.responses.clone();
        responses.sort();
        if !responses.is_empty() {
            let list: Vec<String> = responses
                .iter()
                .map(|((kind, c), n)| {
                    format!(
                        "{} {} x{n}",
                        MESSAGE_TYPES[usize::from(kind & 3)],
                        code_name(*c)
                    )
                })
                .collect();
            let _ = writeln!(o, "        answers: {}", list.join(", "));
        }
        if !t.dropped.is_empty() {
            let list: Vec<String> = t.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(o, "        dropped: {}", list.join(", "));
        }
        if !t.handshakes.is_empty() {
            let list: Vec<String> = t
                .handshakes
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = writeln!(o, "        handshakes: {}", list.join(", "));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_duration(59_999), "59 s");
        assert_eq!(human_duration(3_600_000 + 120_000), "1 h 2 min");
    }
}
