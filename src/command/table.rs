//! `[[command]]` tables: which MQTT topics carry commands, and for whom.
//!
//! A table's `topic` is a template like a route's resource, read against
//! the MQTT topic of an incoming PUBLISH: literal levels, `{gateway}` (this
//! gateway's id), `{name}` (one level) and `{name*}` (the rest, last). The
//! gateway subscribes to the filter the template makes (`{name}` becomes
//! `+`, `{name*}` becomes `#`). `device` and `resource` name captures, and
//! `result_topic` may use `{gateway}`, `{device}` and captures.
//!
//! A result topic must not match any command table: a gateway reading its
//! own results as commands would loop.

use super::Delivery;
use crate::route::Method;

/// One level of a topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Capture(String),
    Rest(String),
}

/// One `[[command]]` table, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTable {
    levels: Vec<Level>,
    /// The MQTT filter the gateway subscribes to.
    pub filter: String,
    device: String,
    resource: String,
    pub method: Method,
    pub ttl_s: u32,
    pub delivery: Delivery,
    /// Push: the window after an upload.
    pub awake_s: u32,
    result_topic: Option<String>,
    /// Over DTLS, only a device authenticated as the mailbox's device gets
    /// its commands; plain CoAP polls for it are refused.
    pub identity: bool,
}

/// What a table makes of an incoming topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    pub device: String,
    pub resource: String,
    pub result_topic: Option<String>,
}

/// A table as written, before checking.
#[derive(Debug, Clone)]
pub struct TableSpec<'a> {
    pub topic: &'a str,
    pub device: &'a str,
    pub resource: &'a str,
    pub method: Method,
    pub ttl_s: u32,
    pub delivery: Delivery,
    pub awake_s: u32,
    pub result_topic: Option<&'a str>,
    pub identity: bool,
}

impl CommandTable {
    /// Checks a table against this gateway's id; `Err` names the key.
    pub fn new(
        spec: &TableSpec<'_>,
        gateway: &str,
    ) -> Result<CommandTable, (&'static str, String)> {
        let levels = parse(spec.topic, gateway).map_err(|e| ("topic", e))?;
        let names: Vec<&str> = levels
            .iter()
            .filter_map(|l| match l {
                Level::Capture(n) | Level::Rest(n) => Some(n.as_str()),
                Level::Literal(_) => None,
            })
            .collect();
        let check = |key: &'static str, template: &str| -> Result<(), (&'static str, String)> {
            for name in placeholders(template).map_err(|e| (key, e))? {
                if name != "gateway" && !names.contains(&name.as_str()) {
                    return Err((
                        key,
                        format!(
                            "{{{name}}} is not a capture of topic {:?}; captures: {}",
                            spec.topic,
                            names.join(", ")
                        ),
                    ));
                }
            }
            Ok(())
        };
        check("device", spec.device)?;
        check("resource", spec.resource)?;
        if spec.device.is_empty() {
            return Err(("device", "is empty; e.g. \"{device}\"".into()));
        }
        let mut result_topic = None;
        if let Some(template) = spec.result_topic {
            for name in placeholders(template).map_err(|e| ("result_topic", e))? {
                if name != "gateway" && name != "device" && !names.contains(&name.as_str()) {
                    return Err((
                        "result_topic",
                        format!(
                            "{{{name}}} is neither {{gateway}}, {{device}} nor a capture of topic"
                        ),
                    ));
                }
            }
            if template.contains(['+', '#']) || template.is_empty() {
                return Err((
                    "result_topic",
                    "must be a topic name: no + or #, not empty".into(),
                ));
            }
            result_topic = Some(template.to_string());
        }
        let filter = levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Capture(_) => "+",
                Level::Rest(_) => "#",
            })
            .collect::<Vec<_>>()
            .join("/");
        Ok(CommandTable {
            levels,
            filter,
            device: spec.device.to_string(),
            resource: spec.resource.to_string(),
            method: spec.method,
            ttl_s: spec.ttl_s,
            delivery: spec.delivery,
            awake_s: spec.awake_s,
            result_topic,
            identity: spec.identity,
        })
    }

    /// The device and resource an incoming topic is for, if this table
    /// takes it.
    pub fn address(&self, topic: &str, gateway: &str) -> Option<Addressed> {
        let parts: Vec<&str> = topic.split('/').collect();
        let mut captures: Vec<(&str, String)> = Vec::new();
        let mut at = 0;
        for level in &self.levels {
            match level {
                Level::Literal(text) => {
                    if parts.get(at) != Some(&text.as_str()) {
                        return None;
                    }
                    at += 1;
                }
                Level::Capture(name) => {
                    let value = parts.get(at).filter(|v| !v.is_empty())?;
                    captures.push((name, value.to_string()));
                    at += 1;
                }
                Level::Rest(name) => {
                    let rest = parts.get(at..).filter(|r| !r.is_empty())?;
                    captures.push((name, rest.join("/")));
                    at = parts.len();
                }
            }
        }
        if at != parts.len() {
            return None;
        }
        let fill = |template: &str, device: Option<&str>| {
            let mut out = template.replace("{gateway}", gateway);
            if let Some(device) = device {
                out = out.replace("{device}", device);
            }
            for (name, value) in &captures {
                out = out.replace(&format!("{{{name}}}"), value);
            }
            out
        };
        let device = fill(&self.device, None);
        if device.is_empty() {
            return None;
        }
        let resource = fill(&self.resource, None);
        let result_topic = self.result_topic.as_deref().map(|t| fill(t, Some(&device)));
        Some(Addressed {
            device,
            resource,
            result_topic,
        })
    }

    /// True when `topic` (a result topic) would be taken as a command.
    pub fn takes(&self, topic: &str, gateway: &str) -> bool {
        self.address(topic, gateway).is_some()
    }
}

fn parse(template: &str, gateway: &str) -> Result<Vec<Level>, String> {
    if template.is_empty() {
        return Err("is empty; e.g. \"cmd/{gateway}/{device}/{resource*}\"".into());
    }
    if template.contains(['+', '#']) {
        return Err("write captures as {name} and {name*}, not + or #".into());
    }
    let parts: Vec<&str> = template.split('/').collect();
    let mut levels = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let level = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some("gateway") => Level::Literal(gateway.to_string()),
            Some(inner) => match inner.strip_suffix('*') {
                Some(name) if i + 1 == parts.len() && is_name(name) => Level::Rest(name.into()),
                Some(name) if is_name(name) => {
                    return Err(format!("{{{name}*}} must be the last level"))
                }
                None if is_name(inner) => Level::Capture(inner.into()),
                _ => return Err(format!("invalid capture {{{inner}}}")),
            },
            None if part.contains(['{', '}']) => {
                return Err(format!("a capture takes a whole level: {part:?}"))
            }
            None => Level::Literal(part.to_string()),
        };
        levels.push(level);
    }
    Ok(levels)
}

/// The `{name}`s of a template.
fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("an unclosed {{ in {template:?}"))?;
        let name = &after[..close];
        if !is_name(name) {
            return Err(format!("invalid placeholder {{{name}}}"));
        }
        names.push(name.to_string());
        rest = &after[close + 1..];
    }
    Ok(names)
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(topic: &str) -> TableSpec<'_> {
        TableSpec {
            topic,
            device: "{device}",
            resource: "{resource}",
            method: Method::Put,
            ttl_s: 3600,
            delivery: Delivery::Poll,
            awake_s: 30,
            result_topic: Some("cmdres/{gateway}/{device}"),
            identity: false,
        }
    }

    #[test]
    fn a_topic_names_the_device_and_resource_and_the_result_topic_follows() {
        let table =
            CommandTable::new(&spec("cmd/{gateway}/{device}/{resource*}"), "gw1").expect("valid");
        assert_eq!(table.filter, "cmd/gw1/+/#");
        assert_eq!(
            table.address("cmd/gw1/valve-3/config/interval", "gw1"),
            Some(Addressed {
                device: "valve-3".into(),
                resource: "config/interval".into(),
                result_topic: Some("cmdres/gw1/valve-3".into()),
            })
        );
        assert_eq!(
            table.address("cmd/gw2/valve-3/x", "gw1"),
            None,
            "another gateway"
        );
        assert_eq!(table.address("cmd/gw1/valve-3", "gw1"), None, "no resource");
        assert_eq!(table.address("cmd/gw1//x", "gw1"), None, "an empty device");
    }

    #[test]
    fn bad_templates_name_their_key() {
        let mut s = spec("cmd/{device}/{resource*}/x");
        assert_eq!(CommandTable::new(&s, "gw").unwrap_err().0, "topic");
        s.topic = "cmd/+/{device}";
        assert_eq!(CommandTable::new(&s, "gw").unwrap_err().0, "topic");
        s.topic = "cmd/{device}";
        assert_eq!(CommandTable::new(&s, "gw").unwrap_err().0, "resource");
        s.resource = "fixed/path";
        s.result_topic = Some("res/{nope}");
        assert_eq!(CommandTable::new(&s, "gw").unwrap_err().0, "result_topic");
        s.result_topic = Some("res/#");
        assert_eq!(CommandTable::new(&s, "gw").unwrap_err().0, "result_topic");
        s.result_topic = None;
        assert!(CommandTable::new(&s, "gw").is_ok());
    }
}
