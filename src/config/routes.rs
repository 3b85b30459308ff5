//! Reads the `[[route]]` tables, and checks each by compiling it with
//! [`Route::new`], the same code the daemon's router runs.
//!
//! A route's problems are reported under `route[N]`, counting tables from 1
//! in file order, because that is how people count them.

use super::document::{Report, Table};
use super::RouteConfig;
use crate::message::Qos;
use crate::route::{Method, Payload, Route};

const ROUTE_KEYS: &[&str] = &[
    "resource",
    "topic",
    "methods",
    "qos",
    "retain",
    "identity",
    "identities",
    "expiry_s",
    "payload",
    "split",
];

pub(super) fn read(doc: &Table, r: &mut Report) -> Vec<RouteConfig> {
    let none = "no [[route]] table: add at least one, or every request would be refused";
    let Some(tables) = doc.tables("route", ROUTE_KEYS, r) else {
        if !doc.contains("route") {
            doc.missing("route", none, r);
        }
        return Vec::new();
    };
    if tables.value.is_empty() {
        r.at(&tables, none);
    }
    tables.value.iter().filter_map(|t| route(t, r)).collect()
}

/// One `[[route]]`, checked by compiling it; `None` when it has a problem.
fn route(t: &Table, r: &mut Report) -> Option<RouteConfig> {
    let qos = route_qos(t, r);
    let retain = t.bool("retain", r).is_some_and(|b| b.value);

    // Route::new checks these keys again, so it runs only when they read
    // cleanly: otherwise it would restate their problems.
    let before = r.problems.len();
    let resource = t.str("resource", r);
    let topic = t.str("topic", r);
    for (got, name, example) in [
        (&resource, "resource", "\"sensors/{device}\""),
        (&topic, "topic", "\"site/{gateway}/{device}\""),
    ] {
        if got.is_none() && !t.contains(name) {
            t.missing(name, &format!("missing; for example {name} = {example}"), r);
        }
    }
    let methods = route_methods(t, r);
    let identity = t.str("identity", r).map(|i| i.value.to_string());
    let identities: Vec<String> = t
        .strings("identities", r)
        .map(|list| list.value.iter().map(|g| g.value.to_string()).collect())
        .unwrap_or_default();
    let expiry_s = t
        .int("expiry_s", 1..=i64::from(u32::MAX), r)
        .map(|e| e.value as u32);
    let payload = match t.str("payload", r) {
        None => Payload::Raw,
        Some(p) => match Payload::from_name(p.value) {
            Some(payload) => payload,
            None => {
                r.at(
                    &p,
                    format!(
                        "unknown payload {:?}; expected \"raw\" (the device's bytes) or \"json\" (translated)",
                        p.value
                    ),
                );
                Payload::Raw
            }
        },
    };
    let split = t.bool("split", r).is_some_and(|b| b.value);
    let (resource, topic) = (resource?, topic?);
    if r.problems.len() != before {
        return None;
    }

    let config = RouteConfig {
        resource: resource.value.to_string(),
        topic: topic.value.to_string(),
        methods,
        qos,
        retain,
        identity,
        identities,
        expiry_s,
        payload,
        split,
    };
    match Route::new(&config.spec()) {
        Ok(_) => Some(config),
        Err(e) => {
            r.add(t.span_of(e.key()).as_ref(), t.key(e.key()), e.detail());
            None
        }
    }
}

fn route_methods(t: &Table, r: &mut Report) -> Vec<Method> {
    let Some(list) = t.strings("methods", r) else {
        return vec![Method::Post, Method::Put];
    };
    let mut methods = Vec::with_capacity(list.value.len());
    for item in &list.value {
        match Method::from_name(item.value) {
            Some(m) if methods.contains(&m) => r.at(item, format!("{m} is listed twice")),
            Some(m) => methods.push(m),
            None => {
                let all: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                let message = format!(
                    "unknown method {:?}; expected one of {}",
                    item.value,
                    all.join(", ")
                );
                r.at(item, message);
            }
        }
    }
    methods
}

fn route_qos(t: &Table, r: &mut Report) -> Qos {
    let Some(got) = t.int("qos", i64::MIN..=i64::MAX, r) else {
        return Qos::AtLeastOnce;
    };
    match u8::try_from(got.value).ok().and_then(Qos::from_level) {
        Some(qos) => qos,
        None => {
            let message = format!(
                "qos {} is not supported; use 1 (at least once) or 0 (at most once)",
                got.value
            );
            r.at(&got, message);
            Qos::AtLeastOnce
        }
    }
}
