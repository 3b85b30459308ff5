//! The mailbox as the gateway's tasks share it: the uplink's intake adds
//! commands, the CoAP servers hand them to devices and take their reports,
//! a timer expires them. Each change is journaled (fsync) before anyone is
//! told, then its result is queued for the broker.
//!
//! Calls that write the journal block on its fsync; async callers run them
//! with `spawn_blocking`. Handing a command out (`poll`, `piggyback`)
//! writes nothing: until the device reports, the command stays pending and
//! is handed out again to the next poll.

use super::journal::Journal;
use super::mailbox::{Limits, Mailbox};
use super::outcome::{self, Detail};
use super::table::CommandTable;
use super::{Command, Delivery, Status};
use crate::route::Method;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// `[commands]` and the tables.
#[derive(Debug, Clone)]
pub struct Settings {
    pub tables: Vec<CommandTable>,
    pub gateway: String,
    pub limits: Limits,
    /// The largest command payload taken.
    pub max_payload: usize,
}

/// A PUBLISH that may be a command.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
    /// MQTT 5 Message Expiry Interval: the command lives no longer.
    pub expiry_s: Option<u32>,
    /// MQTT 5 Response Topic: results go there, before the table's.
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data, echoed in results.
    pub correlation: Option<Vec<u8>>,
    /// The DUP flag: the broker sends it again because our PUBACK did not
    /// reach it (we stopped between journaling it and acking it).
    pub redelivered: bool,
}

/// What became of an incoming PUBLISH; in every case the broker gets its
/// PUBACK (the command is journaled, or there is nothing to keep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    Queued(u64),
    Rejected(String),
    /// No table takes the topic.
    NoTable,
    /// A redelivery (DUP) of a command still pending: acked, not queued
    /// again.
    Repeat(u64),
}

/// A result for the broker: the main queue takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub topic: String,
    pub payload: Vec<u8>,
    pub correlation: Option<Vec<u8>>,
}

/// A command as a device receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    pub id: u64,
    pub resource: String,
    pub method: Method,
    pub payload: Vec<u8>,
    /// Push: how long to keep trying.
    pub awake_s: u32,
}

/// The answer to a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    Command(Handed),
    Empty,
    /// The device's commands need an authenticated identity.
    Forbidden,
}

/// The answer to a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Recorded,
    /// No such pending command (never, or ended already: reports are
    /// idempotent from the device's side, a repeat gets 4.04 harmlessly).
    Unknown,
    Forbidden,
    /// The journal could not be written: the device should ask again.
    Failed,
}

/// Who asks: the device's name and, over DTLS, its identity.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub device: &'a str,
    pub identity: Option<&'a str>,
}

impl Asker<'_> {
    fn may_have(&self, command: &Command) -> bool {
        match self.identity {
            Some(identity) => identity == command.device,
            None => !command.identity_required,
        }
    }
}

/// Figures for /metrics and status.
#[derive(Debug, Default)]
pub struct Counters {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub expired: AtomicU64,
    pub rejected: AtomicU64,
    pub unmatched: AtomicU64,
}

struct State {
    mailbox: Mailbox,
    journal: Journal,
    /// Commands whose "sent" result went out already (once per start).
    announced: HashSet<u64>,
}

pub struct Service {
    /// Whether the gateway has heard from a device (the device table).
    known: Box<dyn Fn(&str) -> bool + Send + Sync>,
    settings: Settings,
    state: Mutex<State>,
    results: mpsc::UnboundedSender<Published>,
    pub counters: Counters,
}

impl Service {
    /// Opens the journal at `path` and rebuilds the mailbox from it;
    /// results go to `results`.
    pub fn open(
        settings: Settings,
        path: &Path,
        results: mpsc::UnboundedSender<Published>,
    ) -> std::io::Result<Service> {
        let replayed = Journal::open(path)?;
        if replayed.cut > 0 {
            log::warn!(
                "commands: the journal's last {} bytes were torn (a cut while writing) and are dropped; \
                 a command being written then was never acknowledged to the broker, which sends it again",
                replayed.cut
            );
        }
        let mut mailbox = Mailbox::new(settings.limits);
        let n = replayed.commands.len();
        for command in replayed.commands {
            mailbox.offer(command);
        }
        if n > 0 {
            log::info!(
                "commands: {n} pending commands restored from {}",
                path.display()
            );
        }
        Ok(Service {
            known: Box::new(|_| true),
            settings,
            state: Mutex::new(State {
                mailbox,
                journal: replayed.journal,
                announced: HashSet::new(),
            }),
            results,
            counters: Counters::default(),
        })
    }

    /// Tells the service which devices the gateway has heard from, so a
    /// command for one it has not is reported as such (and still kept).
    pub fn knowing(mut self, known: impl Fn(&str) -> bool + Send + Sync + 'static) -> Service {
        self.known = Box::new(known);
        self
    }

    /// The MQTT filters to subscribe to.
    pub fn filters(&self) -> Vec<String> {
        self.settings
            .tables
            .iter()
            .map(|t| t.filter.clone())
            .collect()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A PUBLISH from the broker. Blocks on the journal's fsync; the
    /// PUBACK may go once this returns.
    pub fn intake(&self, incoming: Incoming, now_ms: u64) -> std::io::Result<Intake> {
        let gateway = &self.settings.gateway;
        let Some((table, addressed)) = self
            .settings
            .tables
            .iter()
            .find_map(|t| Some((t, t.address(&incoming.topic, gateway)?)))
        else {
            self.counters.unmatched.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                mqtt_topic = incoming.topic.as_str();
                "commands: no [[command]] table takes topic {:?}; dropped (acknowledged to the broker)",
                incoming.topic
            );
            return Ok(Intake::NoTable);
        };
        let ttl_ms = u64::from(match incoming.expiry_s {
            Some(expiry) => expiry.min(table.ttl_s),
            None => table.ttl_s,
        }) * 1000;
        let looping = |topic: &str| {
            self.settings
                .tables
                .iter()
                .any(|table| table.takes(topic, gateway))
        };
        // A Response Topic that a table would take as a command is refused
        // below; its rejection goes to the table's result topic instead.
        let asked = incoming
            .response_topic
            .clone()
            .filter(|t| !t.is_empty() && !t.contains(['+', '#']));
        let loops = asked.as_deref().is_some_and(looping);
        let table_topic = addressed.result_topic.filter(|t| !looping(t));
        let result_topic = match loops {
            true => table_topic,
            false => asked.or(table_topic),
        };
        let mut state = self.state();
        if incoming.redelivered {
            let same = state.mailbox.iter().find(|c| {
                c.device == addressed.device
                    && c.resource == addressed.resource
                    && c.payload == incoming.payload
                    && c.correlation == incoming.correlation
            });
            if let Some(same) = same {
                log::info!(
                    "commands: the broker sent command {} for {} again (DUP); it is pending already",
                    same.id,
                    same.device
                );
                return Ok(Intake::Repeat(same.id));
            }
        }
        let command = Command {
            id: state.journal.next_id(),
            device: addressed.device,
            resource: addressed.resource,
            method: table.method,
            payload: incoming.payload,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
            delivery: table.delivery,
            result_topic,
            correlation: incoming.correlation,
            identity_required: table.identity,
            awake_s: table.awake_s,
        };
        let refusal = if command.payload.len() > self.settings.max_payload {
            Some(format!(
                "payload of {} bytes is over commands.max_payload ({})",
                command.payload.len(),
                self.settings.max_payload
            ))
        } else if loops {
            Some("its Response Topic would be taken as a command".to_string())
        } else {
            state
                .mailbox
                .admits(&command.device)
                .err()
                .map(|r| r.reason())
        };
        if let Some(reason) = refusal {
            drop(state);
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "commands: rejected a command for {} ({}): {reason}",
                command.device,
                command.resource
            );
            self.publish(
                &command,
                Status::Rejected,
                &Detail {
                    reason: Some(reason.clone()),
                    ..Detail::default()
                },
            );
            return Ok(Intake::Rejected(reason));
        }
        state.journal.queued(&command)?;
        let id = command.id;
        log::info!(
            "commands: queued command {id} for {} ({} {}), {} pending for it",
            command.device,
            command.method.name(),
            command.resource,
            state.mailbox.pending(&command.device) + 1
        );
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let reason = (!(self.known)(&command.device)).then(|| {
            "the gateway has not heard from this device (since it started); the command waits for it until it expires"
                .to_string()
        });
        self.publish(
            &command,
            Status::Queued,
            &Detail {
                reason,
                ..Detail::default()
            },
        );
        state.mailbox.offer(command);
        Ok(Intake::Queued(id))
    }

    /// A device asks for its next command (`GET cmd`).
    pub fn poll(&self, asker: Asker<'_>, now_ms: u64) -> Poll {
        self.hand_out(asker, now_ms, |_| true)
    }

    /// A device's upload was stored: its next command, if it is one to
    /// piggyback on the 2.04.
    pub fn piggyback(&self, asker: Asker<'_>, now_ms: u64) -> Option<Handed> {
        match self.hand_out(asker, now_ms, |c| c.delivery == Delivery::Piggyback) {
            Poll::Command(handed) => Some(handed),
            _ => None,
        }
    }

    /// A device's upload was stored: its next command, if it is one the
    /// gateway sends itself (push), to send now while the device listens.
    pub fn push(&self, asker: Asker<'_>, now_ms: u64) -> Option<Handed> {
        match self.hand_out(asker, now_ms, |c| c.delivery == Delivery::Push) {
            Poll::Command(handed) => Some(handed),
            _ => None,
        }
    }

    fn hand_out(&self, asker: Asker<'_>, now_ms: u64, mode: impl Fn(&Command) -> bool) -> Poll {
        let mut state = self.state();
        let Some(command) = state.mailbox.next_for(asker.device, now_ms) else {
            return Poll::Empty;
        };
        if !mode(command) {
            return Poll::Empty;
        }
        if !asker.may_have(command) {
            return Poll::Forbidden;
        }
        let command = command.clone();
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        if state.announced.insert(command.id) {
            self.publish(&command, Status::Sent, &Detail::default());
        }
        Poll::Command(Handed {
            id: command.id,
            resource: command.resource,
            method: command.method,
            payload: command.payload,
            awake_s: command.awake_s,
        })
    }

    /// A device reports on command `id` with its code ("2.04") and payload.
    /// Blocks on the journal's fsync.
    pub fn report(&self, asker: Asker<'_>, id: u64, code: &str, payload: Vec<u8>) -> Report {
        let mut state = self.state();
        let Some(command) = state.mailbox.get(id) else {
            return Report::Unknown;
        };
        if command.device != asker.device || !asker.may_have(command) {
            return Report::Forbidden;
        }
        let status = match code.starts_with("2.") {
            true => Status::Done,
            false => Status::Failed,
        };
        let State {
            mailbox, journal, ..
        } = &mut *state;
        if let Err(e) = journal.ended(&[(id, status)], mailbox.iter().filter(|c| c.id != id)) {
            log::error!("commands: cannot journal the report on command {id}: {e}");
            return Report::Failed;
        }
        let Some(command) = state.mailbox.remove(id) else {
            return Report::Unknown;
        };
        state.announced.remove(&id);
        drop(state);
        match status {
            Status::Done => self.counters.done.fetch_add(1, Ordering::Relaxed),
            _ => self.counters.failed.fetch_add(1, Ordering::Relaxed),
        };
        log::info!(
            "commands: command {id} for {} reported {code} ({})",
            command.device,
            status.name()
        );
        self.publish(
            &command,
            status,
            &Detail {
                code: Some(code.to_string()),
                payload: Some(payload),
                reason: None,
            },
        );
        Report::Recorded
    }

    /// Ends the commands whose time is up; blocks on the journal's fsync.
    /// Returns when the next one expires.
    pub fn expire(&self, now_ms: u64) -> Option<u64> {
        let mut state = self.state();
        let due: Vec<u64> = state
            .mailbox
            .iter()
            .filter(|c| c.expires_ms <= now_ms)
            .map(|c| c.id)
            .collect();
        if !due.is_empty() {
            let ends: Vec<(u64, Status)> = due.iter().map(|id| (*id, Status::Expired)).collect();
            let State {
                mailbox, journal, ..
            } = &mut *state;
            let live = mailbox.iter().filter(|c| c.expires_ms > now_ms);
            if let Err(e) = journal.ended(&ends, live) {
                log::error!(
                    "commands: cannot journal {} expiries: {e}; trying again later",
                    ends.len()
                );
                return Some(now_ms + 1_000);
            }
            for command in state.mailbox.expire(now_ms) {
                state.announced.remove(&command.id);
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "commands: command {} for {} expired undelivered",
                    command.id,
                    command.device
                );
                self.publish(&command, Status::Expired, &Detail::default());
            }
        }
        state.mailbox.next_expiry()
    }

    /// The device a pending command is for.
    pub fn device_of(&self, id: u64) -> Option<String> {
        self.state().mailbox.get(id).map(|c| c.device.clone())
    }

    /// Pending commands and the oldest one's creation time.
    pub fn pending(&self) -> (usize, Option<u64>) {
        let state = self.state();
        (state.mailbox.len(), state.mailbox.oldest_ms())
    }

    /// Pending commands of one device.
    pub fn pending_for(&self, device: &str) -> usize {
        self.state().mailbox.pending(device)
    }

    fn publish(&self, command: &Command, status: Status, detail: &Detail) {
        let Some(topic) = &command.result_topic else {
            return;
        };
        let _ = self.results.send(Published {
            topic: topic.clone(),
            payload: outcome::to_json(command, status, detail),
            correlation: command.correlation.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::table::TableSpec;

    fn service(dir: &Path, limits: Limits) -> (Service, mpsc::UnboundedReceiver<Published>) {
        let table = CommandTable::new(
            &TableSpec {
                topic: "cmd/{gateway}/{device}/{resource*}",
                device: "{device}",
                resource: "{resource}",
                method: Method::Put,
                ttl_s: 60,
                delivery: Delivery::Piggyback,
                awake_s: 30,
                result_topic: Some("res/{device}"),
                identity: false,
            },
            "gw",
        )
        .expect("table");
        let (tx, rx) = mpsc::unbounded_channel();
        let settings = Settings {
            tables: vec![table],
            gateway: "gw".into(),
            limits,
            max_payload: 16,
        };
        (
            Service::open(settings, &dir.join("commands.log"), tx).expect("open"),
            rx,
        )
    }

    fn publish(topic: &str, payload: &[u8]) -> Incoming {
        Incoming {
            topic: topic.into(),
            payload: payload.to_vec(),
            ..Incoming::default()
        }
    }

    fn statuses(rx: &mut mpsc::UnboundedReceiver<Published>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(p) = rx.try_recv() {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("json");
            out.push(format!(
                "{} {}",
                v["id"].as_str().unwrap_or("?"),
                v["status"].as_str().unwrap_or("?")
            ));
        }
        out
    }

    const V1: Asker<'static> = Asker {
        device: "v1",
        identity: None,
    };

    #[test]
    fn a_command_is_queued_handed_out_until_reported_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (s, mut rx) = service(dir.path(), Limits::default());
            assert_eq!(
                s.intake(publish("cmd/gw/v1/relay", b"on"), 0).expect("io"),
                Intake::Queued(1)
            );
            assert_eq!(
                s.intake(publish("cmd/gw/v1/led", b"red"), 0).expect("io"),
                Intake::Queued(2)
            );
            assert_eq!(statuses(&mut rx), ["1 queued", "2 queued"]);
        }
        // Restarted: both are still there, in order.
        let (s, mut rx) = service(dir.path(), Limits::default());
        let first = match s.poll(V1, 1) {
            Poll::Command(handed) => handed,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (first.id, first.resource.as_str(), &first.payload[..]),
            (1, "relay", &b"on"[..])
        );
        assert_eq!(
            s.poll(V1, 2),
            Poll::Command(first.clone()),
            "until it reports"
        );
        assert_eq!(s.report(V1, 1, "2.04", b"ok".to_vec()), Report::Recorded);
        assert_eq!(
            s.report(V1, 1, "2.04", b"ok".to_vec()),
            Report::Unknown,
            "once"
        );
        assert!(matches!(s.poll(V1, 3), Poll::Command(h) if h.id == 2));
        assert_eq!(statuses(&mut rx), ["1 sent", "1 done", "2 sent"]);
        drop(s);
        let (s, _) = service(dir.path(), Limits::default());
        assert_eq!(s.pending(), (1, Some(0)), "1 ended for good; 2 pending");
    }

    #[test]
    fn a_command_for_a_device_never_heard_from_is_kept_and_said_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, mut rx) = service(dir.path(), Limits::default());
        let s = s.knowing(|device| device == "v1");
        s.intake(publish("cmd/gw/v1/x", b"1"), 0).expect("io");
        s.intake(publish("cmd/gw/ghost/x", b"2"), 0).expect("io");
        let reasons: Vec<serde_json::Value> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|p| {
                serde_json::from_slice::<serde_json::Value>(&p.payload).expect("json")["reason"]
                    .clone()
            })
            .collect();
        assert_eq!(reasons[0], serde_json::Value::Null);
        assert!(
            reasons[1]
                .as_str()
                .is_some_and(|r| r.contains("not heard from")),
            "{reasons:?}"
        );
        assert_eq!(s.pending().0, 2, "kept all the same");
    }

    #[test]
    fn a_redelivered_command_still_pending_is_not_queued_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, _) = service(dir.path(), Limits::default());
        assert_eq!(
            s.intake(publish("cmd/gw/v1/x", b"1"), 0).expect("io"),
            Intake::Queued(1)
        );
        let mut again = publish("cmd/gw/v1/x", b"1");
        again.redelivered = true;
        assert_eq!(s.intake(again.clone(), 0).expect("io"), Intake::Repeat(1));
        // Without DUP, the same command twice is two commands.
        assert_eq!(
            s.intake(publish("cmd/gw/v1/x", b"1"), 0).expect("io"),
            Intake::Queued(2)
        );
        s.report(V1, 1, "2.04", vec![]);
        s.report(V1, 2, "2.04", vec![]);
        // Done already: a late redelivery is a new command (at least once).
        assert_eq!(s.intake(again, 0).expect("io"), Intake::Queued(3));
    }

    #[test]
    fn bad_input_gets_a_result_and_nothing_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, mut rx) = service(
            dir.path(),
            Limits {
                max_per_device: 1,
                max_total: 10,
            },
        );
        assert_eq!(
            s.intake(publish("other/gw/v1/x", b"1"), 0).expect("io"),
            Intake::NoTable
        );
        assert!(
            matches!(s.intake(publish("cmd/gw/v1/x", &[0; 17]), 0).expect("io"), Intake::Rejected(r) if r.contains("max_payload"))
        );
        assert_eq!(
            s.intake(publish("cmd/gw/v1/x", b"1"), 0).expect("io"),
            Intake::Queued(2)
        );
        assert!(
            matches!(s.intake(publish("cmd/gw/v1/y", b"2"), 0).expect("io"), Intake::Rejected(r) if r.contains("max_per_device"))
        );
        let mut loop_back = publish("cmd/gw/v2/x", b"3");
        loop_back.response_topic = Some("cmd/gw/v2/oops".into());
        assert!(
            matches!(s.intake(loop_back, 0).expect("io"), Intake::Rejected(r) if r.contains("taken as a command"))
        );
        let mut results = Vec::new();
        while let Ok(p) = rx.try_recv() {
            results.push(p);
        }
        assert!(
            results.iter().all(|p| p.topic.starts_with("res/")),
            "{results:?}"
        );
        let mut again = mpsc::unbounded_channel();
        for p in results {
            again.0.send(p).expect("send");
        }
        assert_eq!(
            statuses(&mut again.1),
            ["1 rejected", "2 queued", "3 rejected", "4 rejected"]
        );
        assert_eq!(s.pending().0, 1);
    }

    #[test]
    fn expiry_ends_a_command_for_good_and_reports_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, mut rx) = service(dir.path(), Limits::default());
        let mut short = publish("cmd/gw/v1/x", b"1");
        short.expiry_s = Some(5);
        s.intake(short, 0).expect("io");
        s.intake(publish("cmd/gw/v1/y", b"2"), 0).expect("io");
        assert_eq!(s.expire(4_999), Some(5_000));
        assert_eq!(s.expire(5_000), Some(60_000));
        assert!(matches!(s.poll(V1, 5_000), Poll::Command(h) if h.id == 2));
        assert_eq!(
            statuses(&mut rx),
            ["1 queued", "2 queued", "1 expired", "2 sent"]
        );
        drop(s);
        let (s, _) = service(dir.path(), Limits::default());
        assert_eq!(s.pending().0, 1);
    }

    #[test]
    fn a_device_gets_only_its_own_commands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, _) = service(dir.path(), Limits::default());
        s.intake(publish("cmd/gw/v1/x", b"1"), 0).expect("io");
        let impostor = Asker {
            device: "v1",
            identity: Some("v2"),
        };
        assert_eq!(s.poll(impostor, 0), Poll::Forbidden);
        let other = Asker {
            device: "v2",
            identity: None,
        };
        assert_eq!(s.report(other, 1, "2.04", vec![]), Report::Forbidden);
        assert_eq!(s.pending().0, 1);
    }
}
