//! Reads the document tree into [`Config`], one section at a time, with the
//! defaults and the checks of each key.
//!
//! Every reader carries on after a problem, using the default in place of the
//! bad value, so that one run reports everything wrong with a file. The
//! `Config` built alongside is thrown away when there was any problem.

use super::document::{Node, Report, Table};
use super::{
    dtls, routes, AdminConfig, CoapConfig, Config, Endpoint, GatewayConfig, LogConfig, MqttConfig,
    OnFull, Protocol, Proxy, Scheme, StoreConfig,
};
use std::net::SocketAddr;
use std::path::PathBuf;

const ROOT_KEYS: &[&str] = &[
    "gateway", "coap", "dtls", "mqtt", "store", "log", "admin", "route", "commands", "command",
];
const GATEWAY_KEYS: &[&str] = &["id"];
const COAP_KEYS: &[&str] = &[
    "listen",
    "max_payload",
    "dedup_capacity",
    "block_capacity",
    "block_lifetime_s",
    "full_retry_after_s",
];
const MQTT_KEYS: &[&str] = &[
    "url",
    "protocol",
    "proxy",
    "proxy_credentials_file",
    "client_id",
    "username",
    "password_file",
    "ca_file",
    "client_cert",
    "client_key",
    "alpn",
    "keep_alive_s",
    "inflight",
    "status_topic",
    "reconnect_min_ms",
    "reconnect_max_s",
    "max_packet_size",
    "max_attempts",
];
const STORE_KEYS: &[&str] = &[
    "path",
    "max_messages",
    "max_bytes",
    "on_full",
    "cache_mb",
    "commit_max_batch",
];
const LOG_KEYS: &[&str] = &["level"];
const ADMIN_KEYS: &[&str] = &["listen", "max_devices", "socket"];

/// Keys only a TLS connection uses.
const TLS_KEYS: &[&str] = &["ca_file", "client_cert", "client_key", "alpn"];
/// The most a 16-bit length prefix allows: MQTT strings and topics.
const MAX_MQTT_STRING: usize = 65_535;
/// MQTT's largest packet: the most its Remaining Length can encode.
const MAX_MQTT_PACKET: i64 = 268_435_455;
/// `store.cache_mb` (ignored since 0.2, accepted for 0.1 configs) stays in
/// this range, as it did.
const MAX_CACHE_MB: i64 = 1 << 40;

pub(super) fn read(root: &Node, r: &mut Report, source: PathBuf) -> Config {
    let doc = Table::root(root, ROOT_KEYS, r);
    let gateway = gateway(&doc.table("gateway", GATEWAY_KEYS, r), r);
    let coap_table = doc.table("coap", COAP_KEYS, r);
    let coap = coap(&coap_table, r);
    let dtls = dtls::read(&doc.table("dtls", dtls::DTLS_KEYS, r), r);
    let mqtt_table = doc.table("mqtt", MQTT_KEYS, r);
    let mqtt = mqtt(&mqtt_table, &gateway.id, r);
    let store_table = doc.table("store", STORE_KEYS, r);
    let store = store(&store_table, r);
    let log = log(&doc.table("log", LOG_KEYS, r), r);
    let admin = admin(&doc.table("admin", ADMIN_KEYS, r), r);
    let routes = routes::read(&doc, r);
    let commands = super::commands::read(
        &doc.table("commands", super::commands::COMMANDS_KEYS, r),
        &doc,
        &gateway.id,
        r,
    );

    if coap.max_payload > mqtt.max_packet_size {
        let span = coap_table
            .span_of("max_payload")
            .or_else(|| mqtt_table.span_of("max_packet_size"));
        r.add(
            span.as_ref(),
            "coap.max_payload",
            format!(
                "{} is more than mqtt.max_packet_size ({}): such messages would be accepted, \
                 then never fit in an MQTT packet",
                coap.max_payload, mqtt.max_packet_size
            ),
        );
    }
    if store.max_bytes < coap.max_payload as u64 {
        let span = store_table
            .span_of("max_bytes")
            .or_else(|| coap_table.span_of("max_payload"));
        r.add(
            span.as_ref(),
            "store.max_bytes",
            format!(
                "{} is less than coap.max_payload ({}): the queue could not hold one such message",
                store.max_bytes, coap.max_payload
            ),
        );
    }

    Config {
        gateway,
        coap,
        dtls,
        mqtt,
        store,
        log,
        admin,
        routes,
        commands,
        source,
    }
}

/// A number of any unsigned type, `default` when absent or invalid.
pub(super) fn number<T: TryFrom<i64>>(
    t: &Table,
    name: &str,
    default: T,
    range: std::ops::RangeInclusive<i64>,
    r: &mut Report,
) -> T {
    let Some(got) = t.int(name, range, r) else {
        return default;
    };
    match T::try_from(got.value) {
        Ok(value) => value,
        Err(_) => {
            r.at(&got, "is too large for this machine");
            default
        }
    }
}

/// A path; empty is a problem.
pub(super) fn path(t: &Table, name: &str, r: &mut Report) -> Option<PathBuf> {
    let got = t.str(name, r)?;
    if got.value.is_empty() {
        r.at(&got, "is empty; remove the key or give a path");
        return None;
    }
    Some(PathBuf::from(got.value))
}

fn gateway(t: &Table, r: &mut Report) -> GatewayConfig {
    let id = match t.str("id", r) {
        Some(id) => {
            if let Err(why) = check_gateway_id(id.value) {
                r.at(&id, why);
            }
            id.value.to_string()
        }
        None if t.contains("id") => String::new(),
        None => match hostname::get().map(|h| h.into_string()) {
            Ok(Ok(host)) => {
                if let Err(why) = check_gateway_id(&host) {
                    let message = format!("not set, and the host name {host:?} {why}; set it");
                    t.missing("id", &message, r);
                }
                host
            }
            Ok(Err(host)) => {
                let message = format!("not set, and the host name {host:?} is not UTF-8; set it");
                t.missing("id", &message, r);
                String::new()
            }
            Err(e) => {
                let message = format!("not set, and the host name cannot be read ({e}); set it");
                t.missing("id", &message, r);
                String::new()
            }
        },
    };
    GatewayConfig { id }
}

/// The id is pasted into topics as `{gateway}`: it must be one valid level.
fn check_gateway_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("is empty");
    }
    if id.contains(['/', '+', '#']) || id.chars().any(char::is_control) {
        return Err(
            "must not contain /, +, # or control characters: it fills {gateway} \
                    as one topic level",
        );
    }
    if id.len() > 1024 {
        return Err("is longer than 1024 bytes");
    }
    Ok(())
}

/// A list of socket addresses, each at most once; `default` when absent.
pub(super) fn addresses(
    t: &Table,
    name: &str,
    default: Vec<SocketAddr>,
    r: &mut Report,
) -> Vec<SocketAddr> {
    let Some(list) = t.strings(name, r) else {
        return default;
    };
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(list.value.len());
    for item in &list.value {
        match item.value.parse::<SocketAddr>() {
            Ok(addr) if addrs.contains(&addr) => r.at(item, format!("{addr} is listed twice")),
            Ok(addr) => addrs.push(addr),
            Err(_) => r.at(
                item,
                format!(
                    "{:?} is not an IP address and port, like \"127.0.0.1:5683\" or \
                     \"[::]:5683\" (host names are not resolved)",
                    item.value
                ),
            ),
        }
    }
    addrs
}

fn coap(t: &Table, r: &mut Report) -> CoapConfig {
    // Loopback only: plain CoAP is unauthenticated (see config/exposure.rs).
    let loopback = vec![
        SocketAddr::from(([127, 0, 0, 1], 5683)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 5683)),
    ];
    let listen = addresses(t, "listen", loopback, r);
    CoapConfig {
        listen,
        max_payload: number(t, "max_payload", 65_536, 1..=MAX_MQTT_PACKET, r),
        dedup_capacity: number(t, "dedup_capacity", 65_536, 1..=i64::MAX, r),
        block_capacity: number(t, "block_capacity", 256, 1..=i64::MAX, r),
        block_lifetime_s: number(t, "block_lifetime_s", 120, 1..=i64::MAX, r),
        full_retry_after_s: number(t, "full_retry_after_s", 30, 1..=i64::from(u32::MAX), r),
    }
}

fn mqtt(t: &Table, gateway: &str, r: &mut Report) -> MqttConfig {
    let default_url = "mqtt://127.0.0.1:1883";
    let mut urls = Vec::new();
    let mut endpoints = Vec::new();
    match t.string_or_strings("url", r) {
        Some(list) => {
            if list.value.is_empty() {
                r.at(&list, "is an empty list; name at least one broker");
            }
            for url in &list.value {
                urls.push(url.value.to_string());
                match parse_url(url.value) {
                    Ok(endpoint) => endpoints.push(endpoint),
                    Err(why) => r.at(url, why),
                }
            }
        }
        None => {
            if !t.contains("url") {
                let message = format!(
                    "missing; the broker to forward to, like \"{default_url}\" or \
                     \"mqtts://broker.example.com\" (or a list of them, tried in turn)"
                );
                t.missing("url", &message, r);
            }
        }
    }
    let url = match urls.is_empty() {
        true => default_url.to_string(),
        false => urls.join(", "),
    };

    let any_tls = endpoints.iter().any(Endpoint::tls);
    if !endpoints.is_empty() && !any_tls {
        for key in TLS_KEYS {
            if t.contains(key) {
                r.add(
                    t.span_of(key).as_ref(),
                    t.key(key),
                    format!("is only used with mqtts:// or wss://, and mqtt.url is {url:?}"),
                );
            }
        }
    }
    let protocol = match t.str("protocol", r) {
        None => Protocol::Auto,
        Some(got) => match got.value {
            "auto" => Protocol::Auto,
            "5" | "5.0" => Protocol::V5,
            "3.1.1" => Protocol::V311,
            other => {
                r.at(
                    &got,
                    format!("unknown protocol {other:?}; expected \"auto\", \"5\" or \"3.1.1\""),
                );
                Protocol::Auto
            }
        },
    };
    let proxy = t
        .str("proxy", r)
        .and_then(|got| match parse_proxy(got.value) {
            Ok((host, port)) => Some(Proxy {
                host,
                port,
                credentials_file: None,
            }),
            Err(why) => {
                r.at(&got, why);
                None
            }
        });
    let proxy_credentials = path(t, "proxy_credentials_file", r);
    if t.contains("proxy_credentials_file") && !t.contains("proxy") {
        r.add(
            t.span_of("proxy_credentials_file").as_ref(),
            t.key("proxy_credentials_file"),
            "needs mqtt.proxy too",
        );
    }
    let proxy = proxy.map(|p| Proxy {
        credentials_file: proxy_credentials,
        ..p
    });
    let ca_file = path(t, "ca_file", r);
    let client_cert = path(t, "client_cert", r);
    let client_key = path(t, "client_key", r);
    for (present, absent) in [("client_cert", "client_key"), ("client_key", "client_cert")] {
        if t.contains(present) && !t.contains(absent) {
            r.add(
                t.span_of(present).as_ref(),
                t.key(present),
                format!("needs mqtt.{absent} too: a client certificate goes with its key"),
            );
        }
    }
    let alpn = match t.strings("alpn", r) {
        None => Vec::new(),
        Some(list) => {
            for item in &list.value {
                if item.value.is_empty() || item.value.len() > 255 {
                    r.at(
                        item,
                        format!("{:?} must be 1 to 255 bytes long", item.value),
                    );
                }
            }
            list.value.iter().map(|p| p.value.to_string()).collect()
        }
    };

    let client_id = match t.str("client_id", r) {
        Some(id) => {
            if id.value.is_empty() {
                r.at(
                    &id,
                    "is empty; remove the key to get \"coap2mqtt-\" and the gateway id",
                );
            } else if id.value.len() > MAX_MQTT_STRING || id.value.contains('\0') {
                r.at(&id, "must be at most 65535 bytes, without NUL");
            }
            id.value.to_string()
        }
        None => format!("coap2mqtt-{gateway}"),
    };
    let username = t.str("username", r).map(|u| {
        if u.value.is_empty() || u.value.len() > MAX_MQTT_STRING || u.value.contains('\0') {
            r.at(
                &u,
                "must be 1 to 65535 bytes, without NUL; remove the key for no user name",
            );
        }
        u.value.to_string()
    });
    let password_file = path(t, "password_file", r);
    if t.contains("password_file") && !t.contains("username") {
        r.add(
            t.span_of("password_file").as_ref(),
            t.key("password_file"),
            "needs mqtt.username too: MQTT sends a password only with a user name",
        );
    }

    let status_topic = match t.str("status_topic", r) {
        Some(template) => match expand_status_topic(template.value, gateway) {
            Ok(topic) => topic,
            Err(why) => {
                r.at(&template, why);
                None
            }
        },
        None => Some(format!("coap2mqtt/{gateway}/status")),
    };

    let reconnect_min_ms = number(t, "reconnect_min_ms", 500u64, 1..=i64::MAX, r);
    let reconnect_max_s = number(t, "reconnect_max_s", 30u64, 1..=i64::MAX, r);
    if reconnect_min_ms > reconnect_max_s.saturating_mul(1000) {
        let span = t
            .span_of("reconnect_min_ms")
            .or_else(|| t.span_of("reconnect_max_s"));
        r.add(
            span.as_ref(),
            t.key("reconnect_min_ms"),
            format!(
                "{reconnect_min_ms} ms is longer than mqtt.reconnect_max_s ({reconnect_max_s} s)"
            ),
        );
    }

    if endpoints.is_empty() {
        endpoints.push(Endpoint {
            scheme: Scheme::Mqtt,
            host: "127.0.0.1".into(),
            port: 1883,
            path: String::new(),
        });
    }
    MqttConfig {
        url,
        endpoints,
        protocol,
        proxy,
        client_id,
        username,
        password_file,
        ca_file,
        client_cert,
        client_key,
        alpn,
        keep_alive_s: number(t, "keep_alive_s", 30, 5..=65_535, r),
        inflight: number(t, "inflight", 256, 1..=65_535, r),
        status_topic,
        reconnect_min_ms,
        reconnect_max_s,
        max_packet_size: number(t, "max_packet_size", 262_144, 1024..=MAX_MQTT_PACKET, r),
        max_attempts: number(t, "max_attempts", 3, 1..=i64::from(u32::MAX), r),
    }
}

/// `mqtt://host[:port]`, `mqtts://host[:port]`, `ws://host[:port][/path]`
/// or `wss://host[:port][/path]`, nothing more.
pub(super) fn parse_url(url: &str) -> Result<Endpoint, String> {
    let expected = "use mqtt://host:port, mqtts://host:port for TLS, or ws:// or wss://host:port/path for WebSocket";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL; {expected}"));
    };
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" => (Scheme::Mqtt, 1883),
        "mqtts" => (Scheme::Mqtts, 8883),
        "ws" => (Scheme::Ws, 80),
        "wss" => (Scheme::Wss, 443),
        _ => return Err(format!("unsupported scheme \"{scheme}://\"; {expected}")),
    };
    let websocket = matches!(scheme, Scheme::Ws | Scheme::Wss);
    let (rest, path) = match (websocket, rest.find('/')) {
        (true, Some(i)) => (&rest[..i], rest[i..].to_string()),
        (true, None) => (rest, "/mqtt".to_string()),
        (false, _) => (rest, String::new()),
    };
    if path.contains(['?', '#', ' ']) {
        return Err(format!("{url:?}: the WebSocket path must be a plain path"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(format!("{url:?} has a path or query; {expected}"));
    }
    if authority.contains('@') {
        return Err(format!(
            "{url:?} has a user name; use mqtt.username and mqtt.password_file"
        ));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '[' around an IPv6 address"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{url:?}: [{host}] is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{url:?}: unexpected {after:?} after ']'")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host; {expected}"));
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!(
            "{url:?}: {host:?} is not a host name or address (IPv6 goes in brackets: [::1])"
        ));
    }
    let port = match port {
        None => default_port,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => {
                return Err(format!(
                    "{url:?}: port {text:?} is not a number from 1 to 65535"
                ))
            }
        },
    };
    Ok(Endpoint {
        scheme,
        host: host.to_string(),
        port,
        path,
    })
}

/// `http://host:port` (the proxy's own address; credentials come from a
/// file, never the config).
fn parse_proxy(url: &str) -> Result<(String, u16), String> {
    let expected = "use http://host:port (user and password go in mqtt.proxy_credentials_file)";
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: {expected}"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['@', '/', '?', '#']) {
        return Err(format!("{url:?}: {expected}"));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?} has no port; {expected}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?} has no host; {expected}"));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok((host.to_string(), port)),
        _ => Err(format!(
            "{url:?}: port {port:?} is not a number from 1 to 65535"
        )),
    }
}

/// Fills `{gateway}`; an empty template disables the status topic.
pub(super) fn expand_status_topic(template: &str, gateway: &str) -> Result<Option<String>, String> {
    if template.is_empty() {
        return Ok(None);
    }
    if template.contains(['+', '#']) {
        return Err("must not contain + or #: a published topic cannot hold wildcards".into());
    }
    if template.contains('\0') {
        return Err("must not contain NUL".into());
    }
    if template.starts_with('$') {
        return Err("must not start with $: such topics belong to the broker".into());
    }
    let mut topic = String::with_capacity(template.len() + gateway.len());
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("unmatched '}}' in {template:?}"));
        }
        topic.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        match &after[..close] {
            "gateway" => topic.push_str(gateway),
            other => {
                return Err(format!(
                    "unknown variable {{{other}}}; only {{gateway}} can be used here"
                ))
            }
        }
        rest = &after[close + 1..];
    }
    topic.push_str(rest);
    if topic.len() > MAX_MQTT_STRING {
        return Err("is longer than 65535 bytes".into());
    }
    Ok(Some(topic))
}

fn store(t: &Table, r: &mut Report) -> StoreConfig {
    let on_full = match t.str("on_full", r) {
        None => OnFull::Reject,
        Some(got) => match got.value {
            "reject" => OnFull::Reject,
            "drop-oldest" => OnFull::DropOldest,
            other => {
                r.at(
                    &got,
                    format!("unknown value {other:?}; expected \"reject\" or \"drop-oldest\""),
                );
                OnFull::Reject
            }
        },
    };
    StoreConfig {
        path: path(t, "path", r).unwrap_or_else(|| PathBuf::from("coap2mqtt-queue")),
        max_messages: number(t, "max_messages", 1_000_000, 1..=i64::MAX, r),
        max_bytes: number(t, "max_bytes", 1 << 30, 1..=i64::MAX, r),
        on_full,
        cache_mb: number(t, "cache_mb", 16, 1..=MAX_CACHE_MB, r),
        commit_max_batch: number(t, "commit_max_batch", 1024, 1..=i64::MAX, r),
    }
}

fn log(t: &Table, r: &mut Report) -> LogConfig {
    use log::LevelFilter;
    let level = match t.str("level", r) {
        None => LevelFilter::Info,
        Some(got) => match got.value.to_ascii_lowercase().as_str() {
            "error" => LevelFilter::Error,
            "warn" => LevelFilter::Warn,
            "info" => LevelFilter::Info,
            "debug" => LevelFilter::Debug,
            "trace" => LevelFilter::Trace,
            _ => {
                r.at(
                    &got,
                    format!(
                        "unknown level {:?}; expected error, warn, info, debug or trace",
                        got.value
                    ),
                );
                LevelFilter::Info
            }
        },
    };
    LogConfig { level }
}

fn admin(t: &Table, r: &mut Report) -> AdminConfig {
    let default = SocketAddr::from(([127, 0, 0, 1], 9464));
    let listen = match t.str("listen", r) {
        None => Some(default),
        Some(got) if got.value.is_empty() => None,
        Some(got) => match got.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                r.at(
                    &got,
                    format!(
                        "{:?} is not an IP address and port, like \"127.0.0.1:9464\"; \
                         \"\" turns the endpoint off",
                        got.value
                    ),
                );
                Some(default)
            }
        },
    };
    let max_devices = t
        .int("max_devices", 1..=1_000_000, r)
        .map_or(crate::devices::DEFAULT_MAX_DEVICES, |got| {
            got.value as usize
        });
    let socket = match t.str("socket", r) {
        None => Some(PathBuf::from(DEFAULT_ADMIN_SOCKET)),
        Some(got) if got.value.is_empty() => None,
        // sun_path holds 108 bytes, its NUL included.
        Some(got) if got.value.len() > 107 => {
            r.at(
                &got,
                "is longer than 107 bytes, the most a Unix socket's path can be; \
                 choose a shorter path",
            );
            None
        }
        Some(got) => Some(PathBuf::from(got.value)),
    };
    AdminConfig {
        listen,
        max_devices,
        socket,
    }
}

/// Where the admin socket is unless `admin.socket` says otherwise: in the
/// unit's RuntimeDirectory.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/coap2mqtt/admin.sock";
