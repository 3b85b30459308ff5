//! Reads `[commands]` and the `[[command]]` tables (see `crate::command`),
//! and checks each table by compiling it with the daemon's own code.
//!
//! A table's problems are reported under `command[N]`, counting from 1.

use super::document::{Report, Table};
use crate::command::mailbox::Limits;
use crate::command::table::{CommandTable, TableSpec};
use crate::command::Delivery;
use crate::route::Method;

pub(super) const COMMANDS_KEYS: &[&str] = &["max_per_device", "max_total", "max_payload", "path"];
const COMMAND_KEYS: &[&str] = &[
    "topic",
    "awake_s",
    "device",
    "resource",
    "method",
    "ttl_s",
    "delivery",
    "result_topic",
    "identity",
];

/// `[commands]` and the tables; empty `tables` means commands are off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandsConfig {
    pub tables: Vec<CommandTable>,
    pub limits: Limits,
    pub max_payload: usize,
    /// The mailbox resource devices GET (`cmd`).
    pub path: String,
}

pub(super) fn read(settings: &Table, doc: &Table, gateway: &str, r: &mut Report) -> CommandsConfig {
    let defaults = Limits::default();
    let limits = Limits {
        max_per_device: settings
            .int("max_per_device", 1..=100_000, r)
            .map_or(defaults.max_per_device, |v| v.value as usize),
        max_total: settings
            .int("max_total", 1..=10_000_000, r)
            .map_or(defaults.max_total, |v| v.value as usize),
    };
    let max_payload = settings
        .int("max_payload", 0..=65_536, r)
        .map_or(1_024, |v| v.value as usize);
    let path = match settings.str("path", r) {
        None => "cmd".to_string(),
        Some(p) if !p.value.is_empty() && !p.value.contains('/') => p.value.to_string(),
        Some(p) => {
            r.at(&p, "one path segment, like \"cmd\"");
            "cmd".to_string()
        }
    };
    let tables = match doc.tables("command", COMMAND_KEYS, r) {
        Some(tables) => tables
            .value
            .iter()
            .filter_map(|t| table(t, gateway, r))
            .collect(),
        None => Vec::new(),
    };
    CommandsConfig {
        tables,
        limits,
        max_payload,
        path,
    }
}

fn table(t: &Table, gateway: &str, r: &mut Report) -> Option<CommandTable> {
    let before = r.problems.len();
    let topic = t.str("topic", r);
    if topic.is_none() && !t.contains("topic") {
        t.missing(
            "topic",
            "missing; for example topic = \"cmd/{gateway}/{device}/{resource*}\"",
            r,
        );
    }
    let device = t.str("device", r).map_or("{device}", |d| d.value);
    let resource = t.str("resource", r).map_or("{resource}", |d| d.value);
    let method = match t.str("method", r) {
        None => Method::Put,
        Some(m) => match Method::from_name(m.value) {
            Some(method) => method,
            None => {
                r.at(
                    &m,
                    format!("unknown method {:?}; e.g. \"PUT\" or \"POST\"", m.value),
                );
                Method::Put
            }
        },
    };
    let ttl_s = t
        .int("ttl_s", 1..=i64::from(u32::MAX), r)
        .map_or(3_600, |v| v.value as u32);
    let delivery = match t.str("delivery", r) {
        None => Delivery::Push,
        Some(d) => match Delivery::from_name(d.value) {
            Some(delivery) => delivery,
            None => {
                r.at(
                    &d,
                    format!(
                        "unknown delivery {:?}; expected \"push\", \"poll\" or \"piggyback\"",
                        d.value
                    ),
                );
                Delivery::Push
            }
        },
    };
    let awake_s = t
        .int("awake_s", 1..=3_600, r)
        .map_or(30, |v| v.value as u32);
    let result_topic = t.str("result_topic", r).map(|v| v.value);
    let identity = t.bool("identity", r).is_some_and(|b| b.value);
    let topic = topic?;
    if r.problems.len() != before {
        return None;
    }
    let spec = TableSpec {
        topic: topic.value,
        device,
        resource,
        method,
        ttl_s,
        delivery,
        awake_s,
        result_topic,
        identity,
    };
    match CommandTable::new(&spec, gateway) {
        Ok(table) => Some(table),
        Err((key, detail)) => {
            r.add(t.span_of(key).as_ref(), t.key(key), detail);
            None
        }
    }
}
