//! Tells systemd the daemon is alive, and how it is doing.
//!
//! Every tick (half of `WatchdogSec=`, at most a second) the pipeline is
//! judged (`metrics::Metrics::check`). `WATCHDOG=1` is sent only while the
//! commit thread and the uplink make progress or have nothing to do, so a
//! wedged daemon stops petting the watchdog and systemd restarts it; a
//! stopped (SIGSTOP) or deadlocked process sends nothing at all. `STATUS=`
//! carries the queue depth and the uplink's state for `systemctl status`.
//!
//! Without `WATCHDOG_USEC` (not under systemd, or no `WatchdogSec=`) the
//! task still samples the pipeline each second, so `/healthz` sees
//! progress, and still sends `STATUS=` (a no-op without `NOTIFY_SOCKET`).

use crate::metrics::Metrics;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The longest tick: the health monitor needs regular samples.
const MAX_TICK: Duration = Duration::from_secs(1);

/// The tick for a watchdog timeout of `usec` microseconds: half of it, at
/// most [`MAX_TICK`], at least 10 ms.
pub fn tick_for(usec: Option<u64>) -> Duration {
    match usec {
        Some(usec) => (Duration::from_micros(usec) / 2).clamp(Duration::from_millis(10), MAX_TICK),
        None => MAX_TICK,
    }
}

/// Runs until `shutdown`.
pub async fn run(metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    let mut usec = 0u64;
    let enabled = sd_notify::watchdog_enabled(false, &mut usec);
    let mut tick = tokio::time::interval(tick_for(enabled.then_some(usec)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if enabled {
        log::info!(
            "watchdog: systemd expects a sign of life every {:?}",
            Duration::from_micros(usec)
        );
    }
    let mut was_alive = true;
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let verdict = metrics.check();
        let alive = verdict.alive();
        if alive != was_alive {
            if alive {
                log::warn!("watchdog: the pipeline moves again");
            } else {
                log::error!(
                    "watchdog: the pipeline is stuck; no longer telling systemd we are alive: {}",
                    verdict.describe().replace('\n', "; ")
                );
            }
            was_alive = alive;
        }
        let status = metrics.status_line();
        let mut states = Vec::with_capacity(2);
        if alive && enabled {
            states.push(NotifyState::Watchdog);
        }
        if status != last_status {
            states.push(NotifyState::Status(&status));
        }
        if !states.is_empty() {
            let _ = sd_notify::notify(false, &states);
        }
        last_status = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_half_the_watchdog_timeout_within_bounds() {
        assert_eq!(tick_for(Some(1_000_000)), Duration::from_millis(500));
        assert_eq!(tick_for(Some(30_000_000)), Duration::from_secs(1));
        assert_eq!(tick_for(Some(1_000)), Duration::from_millis(10));
        assert_eq!(tick_for(None), Duration::from_secs(1));
    }
}
