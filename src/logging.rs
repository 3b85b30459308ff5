//! Logging set-up, and rate limiting for per-packet problems.
//!
//! Under systemd (stderr is the journal's stream) the daemon logs natively
//! to the journal: each line keeps its priority (error 3, warn 4, info 5,
//! debug 6, trace 7) and its structured fields. Anywhere else it logs to
//! stderr in env_logger's format. The level comes from the config and
//! changes on SIGHUP ([`set_level`]); `RUST_LOG`, when set, overrides it
//! with env_logger's syntax in both cases. One filter decides for both.
//!
//! Structured fields are `log` key-values; the journal gets them as fields
//! (upper-cased), stderr shows them after the message. One name per idea,
//! whatever the call site, so that a query works everywhere
//! (`journalctl -u coap2mqtt COAP_PEER=10.0.0.7:5683`):
//!
//! | key | journal field | what |
//! | --- | --- | --- |
//! | `coap_peer` | `COAP_PEER` | the device's address, `ip:port` |
//! | `coap_identity` | `COAP_IDENTITY` | its authenticated (DTLS) identity |
//! | `coap_code` | `COAP_CODE` | a CoAP response code, `2.04` ([`coap_code`]) |
//! | `drop_reason` | `DROP_REASON` | `coap::Ignored::reason()` of a dropped datagram |
//! | `mqtt_topic` | `MQTT_TOPIC` | a message's topic |
//! | `queue_seq` | `QUEUE_SEQ` | a message's sequence number in the queue |
//! | `mqtt_broker` | `MQTT_BROKER` | the broker's URL |
//!
//! Written as `log::info!(coap_peer:% = addr; "...")`.
//!
//! A gateway facing a misbehaving device (or a scan) must not flood the
//! journal: problems that can repeat per packet are logged through a
//! [`RateLimited`] gate that lets one line through per interval and reports
//! how many it held back. Every such problem is also counted in a metric, so
//! nothing is silent even when the log is quiet.
//!
//! Secrets: no call site logs a PSK, the MQTT password or a private key. The
//! password and TLS keys go straight from their files into rumqttc/rustls;
//! the uplink's settings have no `Debug`. rumqttc's own lines are capped at
//! warn unless `RUST_LOG` asks for more, and even then it does not print the
//! CONNECT packet's password.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Sets up logging: `level` from the config, `RUST_LOG` overriding it; to
/// the journal when stderr is connected to it, else to stderr.
pub fn init(level: log::LevelFilter) {
    let spec = std::env::var("RUST_LOG").ok();
    let sink = journal()
        .map(Sink::Journal)
        .unwrap_or_else(|| Sink::Stderr(stderr()));
    let gate: &'static Gate = Box::leak(Box::new(Gate {
        filter: RwLock::new(filter(level, spec.as_deref())),
        spec,
        sink,
    }));
    if log::set_logger(gate).is_ok() {
        log::set_max_level(gate.max_level());
        let _ = GATE.set(gate);
    }
}

/// Changes the configured level while running (SIGHUP). `RUST_LOG`, when
/// set at start, still overrides it. Returns the level now in force for
/// the daemon's own lines.
pub fn set_level(level: log::LevelFilter) -> Option<log::LevelFilter> {
    let gate = GATE.get()?;
    *gate.filter.write().unwrap_or_else(|p| p.into_inner()) = filter(level, gate.spec.as_deref());
    let max = gate.max_level();
    log::set_max_level(max);
    Some(max)
}

/// The one logger: a filter that SIGHUP can replace, in front of the
/// journal or stderr.
static GATE: OnceLock<&'static Gate> = OnceLock::new();

struct Gate {
    filter: RwLock<env_filter::Filter>,
    /// `RUST_LOG` as it was at start.
    spec: Option<String>,
    sink: Sink,
}

enum Sink {
    /// Native journal entries, when stderr is the journal's stream.
    Journal(systemd_journal_logger::JournalLog),
    /// env_logger's format on stderr, everything it is given (the gate
    /// filters).
    Stderr(env_logger::Logger),
}

impl Gate {
    fn max_level(&self) -> log::LevelFilter {
        self.filter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .filter()
    }
}

fn journal() -> Option<systemd_journal_logger::JournalLog> {
    if !systemd_journal_logger::connected_to_journal() {
        return None;
    }
    let journal = systemd_journal_logger::JournalLog::new().ok()?;
    Some(journal.with_syslog_identifier("coap2mqtt".into()))
}

fn stderr() -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Trace);
    builder.format_timestamp_millis();
    builder.build()
}

impl log::Log for Gate {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let pass = self
            .filter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .matches(record);
        if pass {
            match &self.sink {
                Sink::Journal(journal) => journal.log(record),
                Sink::Stderr(stderr) => stderr.log(record),
            }
        }
    }

    fn flush(&self) {
        match &self.sink {
            Sink::Journal(journal) => journal.flush(),
            Sink::Stderr(stderr) => stderr.flush(),
        }
    }
}

/// Noisy dependencies one notch down. rtc-dtls warns about every
/// ClientHello extension it does not know and logs each handshake message
/// at debug level; our session logs say what happened to each handshake.
const QUIET: [(&str, log::LevelFilter); 6] = [
    ("sled", log::LevelFilter::Warn),
    ("rumqttc", log::LevelFilter::Warn),
    ("hyper", log::LevelFilter::Warn),
    ("hyper_util", log::LevelFilter::Warn),
    ("rtc_dtls", log::LevelFilter::Error),
    ("rtc_shared", log::LevelFilter::Error),
];

/// Our own crate at the configured level, noisy dependencies one notch
/// down, then `RUST_LOG` (env_logger's syntax) over both.
fn filter(level: log::LevelFilter, spec: Option<&str>) -> env_filter::Filter {
    let mut builder = env_filter::Builder::new();
    builder.filter_level(level);
    for (module, most) in QUIET {
        builder.filter_module(module, level.min(most));
    }
    if let Some(spec) = spec {
        builder.parse(spec);
    }
    builder.build()
}

/// `2.04` for the code byte of a CoAP message (its second byte).
pub fn coap_code(message: &[u8]) -> String {
    match message.get(1) {
        Some(code) => format!("{}.{:02}", code >> 5, code & 0x1f),
        None => "-".into(),
    }
}

/// Lets one log line per key through each interval.
pub struct RateLimited {
    interval: Duration,
    last: HashMap<&'static str, (Instant, u64)>,
}

impl RateLimited {
    pub fn new(interval: Duration) -> RateLimited {
        RateLimited {
            interval,
            last: HashMap::new(),
        }
    }

    /// Some(n) when a line for `key` may be written now, n being how many
    /// were held back since the last one; None to stay quiet.
    pub fn admit(&mut self, key: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(key) {
            Some((at, held)) if now.duration_since(*at) < self.interval => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_held_back_count() {
        let mut gate = RateLimited::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(gate.admit("bad", t0), Some(0));
        assert_eq!(gate.admit("bad", t0 + Duration::from_secs(1)), None);
        assert_eq!(gate.admit("bad", t0 + Duration::from_secs(2)), None);
        assert_eq!(gate.admit("other", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(gate.admit("bad", t0 + Duration::from_secs(10)), Some(2));
    }

    #[test]
    fn coap_codes_read_as_class_dot_detail() {
        assert_eq!(coap_code(&[0x60, 0x44]), "2.04");
        assert_eq!(coap_code(&[0x60, 0x84]), "4.04");
        assert_eq!(coap_code(&[0x70, 0x00]), "0.00");
        assert_eq!(coap_code(&[0x60]), "-");
    }

    #[test]
    fn rust_log_overrides_the_configured_level() {
        let f = filter(log::LevelFilter::Info, Some("coap2mqtt=trace"));
        assert_eq!(f.filter(), log::LevelFilter::Trace);
        let f = filter(log::LevelFilter::Debug, None);
        let sled = log::MetadataBuilder::new()
            .target("sled::pagecache")
            .level(log::Level::Info)
            .build();
        assert!(!f.enabled(&sled));
    }
}
