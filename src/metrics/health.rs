//! Is the daemon well? Two questions with two different consequences:
//!
//! - **Wedged** (the watchdog stops petting systemd, which restarts us):
//!   the commit thread has been inside one batch for too long, or commands
//!   wait for it and it does nothing; or the uplink is connected, the queue
//!   holds messages, and no PUBACK has come for too long.
//! - **Degraded** (`/healthz` answers 503, but a restart would not help):
//!   the last commit failed, so the store cannot be written (a full disk, a
//!   read-only file system). The committer keeps trying with every batch.
//!
//! Idle is healthy: an empty queue, or no broker to talk to (the uplink's
//! reconnect loop is its own progress), never counts as a stall.

use std::sync::Mutex;
use std::time::Duration;

/// How long before no progress is a stall.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// One commit batch, or commands waiting with no commit.
    pub commit: Duration,
    /// Connected, messages queued, and no PUBACK.
    pub publish: Duration,
}

impl Thresholds {
    /// The defaults, with the publish threshold at least four MQTT
    /// keep-alive intervals (a dead connection is noticed in 1.5 of them).
    pub fn for_keep_alive(keep_alive: Duration) -> Thresholds {
        let default = Thresholds::default();
        Thresholds {
            publish: default.publish.max(keep_alive.saturating_mul(4)),
            ..default
        }
    }
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            commit: Duration::from_secs(30),
            publish: Duration::from_secs(120),
        }
    }
}

/// What was seen at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    pub now_ms: u64,
    /// The store is open (not unavailable after an I/O error or an open
    /// that failed).
    pub store_available: bool,
    pub last_commit_ok: bool,
    pub commit_running_since_ms: Option<u64>,
    pub last_commit_done_ms: u64,
    /// Commands waiting for the committer; `None` when it has stopped.
    pub store_pending: Option<usize>,
    pub depth: u64,
    pub connected: bool,
    pub acked: u64,
}

/// The judgement, with reasons a person can read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Restart-worthy: the watchdog withholds WATCHDOG=1.
    pub wedged: Vec<String>,
    /// Unhealthy, but a restart would not help.
    pub degraded: Vec<String>,
}

impl Verdict {
    pub fn healthy(&self) -> bool {
        self.wedged.is_empty() && self.degraded.is_empty()
    }

    pub fn alive(&self) -> bool {
        self.wedged.is_empty()
    }

    /// "healthy", or the reasons, one per line.
    pub fn describe(&self) -> String {
        if self.healthy() {
            return "healthy".into();
        }
        self.wedged
            .iter()
            .chain(&self.degraded)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Remembers when the uplink last made progress.
pub(super) struct Monitor {
    thresholds: Thresholds,
    started_ms: u64,
    /// (acks seen at the last sample, when progress was last seen).
    progress: Mutex<(u64, u64)>,
}

impl Monitor {
    pub fn new(thresholds: Thresholds, started_ms: u64) -> Monitor {
        Monitor {
            thresholds,
            started_ms,
            progress: Mutex::new((0, started_ms)),
        }
    }

    pub fn judge(&self, p: &Probe) -> Verdict {
        let mut verdict = Verdict::default();
        let commit_limit = self.thresholds.commit.as_millis() as u64;
        let publish_limit = self.thresholds.publish.as_millis() as u64;

        match p.commit_running_since_ms {
            Some(since) if p.now_ms.saturating_sub(since) > commit_limit => {
                verdict.wedged.push(format!(
                    "store: one commit has been running for {} s",
                    p.now_ms.saturating_sub(since) / 1000
                ));
            }
            Some(_) => {}
            None => {
                let last = p.last_commit_done_ms.max(self.started_ms);
                match p.store_pending {
                    Some(n) if n > 0 && p.now_ms.saturating_sub(last) > commit_limit => {
                        verdict.wedged.push(format!(
                            "store: {n} commands waiting and no commit for {} s",
                            p.now_ms.saturating_sub(last) / 1000
                        ));
                    }
                    None => verdict
                        .wedged
                        .push("store: the commit thread has stopped".into()),
                    _ => {}
                }
            }
        }
        if !p.store_available {
            verdict.degraded.push(
                "store: unavailable (it cannot be opened or written; reopened every second)".into(),
            );
        } else if !p.last_commit_ok {
            verdict
                .degraded
                .push("store: the last commit failed; the queue cannot be written".into());
        }

        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let (acks_seen, since) = &mut *progress;
        if p.depth == 0 || !p.connected || p.acked != *acks_seen {
            *since = p.now_ms;
        }
        *acks_seen = p.acked;
        let stalled_for = p.now_ms.saturating_sub(*since);
        if stalled_for > publish_limit {
            verdict.wedged.push(format!(
                "uplink: connected with {} messages queued and no PUBACK for {} s",
                p.depth,
                stalled_for / 1000
            ));
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_store_is_degraded_not_wedged() {
        let v = monitor().judge(&Probe {
            store_available: false,
            ..idle(1_000)
        });
        assert!(!v.healthy());
        assert!(v.alive(), "a restart would not help: {v:?}");
        assert!(v.describe().contains("store: unavailable"));
    }

    fn idle(now_ms: u64) -> Probe {
        Probe {
            now_ms,
            store_available: true,
            last_commit_ok: true,
            commit_running_since_ms: None,
            last_commit_done_ms: 0,
            store_pending: Some(0),
            depth: 0,
            connected: true,
            acked: 0,
        }
    }

    fn monitor() -> Monitor {
        Monitor::new(Thresholds::default(), 1_000)
    }

    #[test]
    fn an_idle_daemon_is_healthy_forever() {
        let m = monitor();
        assert!(m.judge(&idle(1_000)).healthy());
        assert!(m.judge(&idle(10_000_000)).healthy());
    }

    #[test]
    fn a_failed_commit_degrades_but_does_not_wedge() {
        let v = monitor().judge(&Probe {
            store_available: true,
            last_commit_ok: false,
            ..idle(2_000)
        });
        assert!(!v.healthy());
        assert!(v.alive());
        assert!(v.describe().contains("cannot be written"));
    }

    #[test]
    fn a_commit_running_too_long_wedges() {
        let m = monitor();
        let running = |now| Probe {
            commit_running_since_ms: Some(5_000),
            ..idle(now)
        };
        assert!(m.judge(&running(30_000)).alive());
        assert!(!m.judge(&running(36_000)).alive());
    }

    #[test]
    fn commands_waiting_for_an_idle_committer_wedge_after_the_threshold() {
        let m = monitor();
        let waiting = |now| Probe {
            store_pending: Some(3),
            last_commit_done_ms: 2_000,
            ..idle(now)
        };
        assert!(m.judge(&waiting(20_000)).alive());
        assert!(!m.judge(&waiting(40_000)).alive());
        let gone = Probe {
            store_pending: None,
            ..idle(3_000)
        };
        assert!(!m.judge(&gone).alive());
    }

    #[test]
    fn a_connected_uplink_without_acks_wedges_only_while_messages_wait() {
        let m = monitor();
        let queued = |now, acked| Probe {
            depth: 10,
            acked,
            ..idle(now)
        };
        assert!(m.judge(&queued(1_000, 0)).alive());
        assert!(m.judge(&queued(100_000, 5)).alive(), "acks are progress");
        assert!(m.judge(&queued(200_000, 5)).alive());
        assert!(!m.judge(&queued(221_000, 5)).alive());
        assert!(m.judge(&queued(222_000, 6)).alive(), "an ack clears it");
    }

    #[test]
    fn a_disconnected_uplink_is_not_a_stall() {
        let m = monitor();
        let offline = |now| Probe {
            depth: 10,
            connected: false,
            ..idle(now)
        };
        assert!(m.judge(&offline(1_000)).alive());
        assert!(m.judge(&offline(1_000_000)).alive());
    }
}
