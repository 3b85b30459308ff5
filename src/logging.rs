//! Logging set-up, and rate limiting for per-packet problems.
//!
//! A gateway facing a misbehaving device (or a scan) must not flood the
//! journal: problems that can repeat per packet are logged through a
//! [`RateLimited`] gate that lets one line through per interval and reports
//! how many it held back. Every such problem is also counted in a metric, so
//! nothing is silent even when the log is quiet.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sets up logging: `level` from the config, `RUST_LOG` overriding it.
pub fn init(level: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // Our own crate at the configured level; noisy dependencies one notch down.
    builder.filter_module("sled", log::LevelFilter::Warn);
    builder.filter_module("rumqttc", log::LevelFilter::Warn);
    // webrtc-dtls warns about every ClientHello extension it does not know;
    // our session logs say what happened to each handshake.
    builder.filter_module("webrtc_dtls", log::LevelFilter::Error);
    builder.filter_module("webrtc_util", log::LevelFilter::Error);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format_timestamp_millis();
    let _ = builder.try_init();
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
}
