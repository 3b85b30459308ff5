//! The configuration file: its types, defaults and validation.
//!
//! A config is read once at start (and again on reload), and either fully
//! valid or refused with every problem found, each naming the file, the line
//! and the key, so that one edit fixes them all:
//!
//! ```text
//! coap2mqtt.toml:14: route[2].topic: unknown variable {devce}
//! ```
//!
//! `route[N]` counts `[[route]]` tables from 1, in file order. Unknown keys
//! are errors: a typo must not silently leave a default in place.
//!
//! Invariants:
//! - A `Config` returned by [`Config::load`] or [`Config::parse`] is valid:
//!   its routes compile, its `{gateway}` is one topic level, its numbers are
//!   in range. The daemon checks nothing again.
//! - Reading a config touches no file but the config itself; the password
//!   file is read only when the daemon asks ([`MqttConfig::read_password`]).
//!
//! The file is parsed into a tree that keeps every position
//! (`document.rs`), then read section by section (`sections.rs`, `routes.rs`).
//! `exposure.rs` judges who can reach plain CoAP, for the start-up log.

pub mod commands;
mod document;
mod dtls;
pub mod exposure;
pub mod psk;
mod routes;
mod sections;
#[cfg(test)]
mod tests;

use crate::message::Qos;
use crate::route::{Method, Payload, Route, RouteSpec, Router};
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Larger than any sensible config file; anything bigger is the wrong file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// MQTT carries the password with a 16-bit length.
const MAX_PASSWORD_BYTES: usize = 65_535;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub coap: CoapConfig,
    pub dtls: DtlsConfig,
    pub mqtt: MqttConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    /// The `[[route]]` tables in file order, checked but not compiled.
    pub routes: Vec<RouteConfig>,
    /// `[commands]` and the `[[command]]` tables.
    pub commands: commands::CommandsConfig,
    /// The file this came from, as given.
    pub source: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// `{gateway}` in topics; defaults to the host name.
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapConfig {
    /// Plain CoAP over UDP; empty disables it.
    pub listen: Vec<SocketAddr>,
    /// Largest request payload, after block-wise reassembly.
    pub max_payload: usize,
    /// Recent exchanges remembered to answer retransmissions.
    pub dedup_capacity: usize,
    /// Block-wise uploads reassembled at once.
    pub block_capacity: usize,
    /// An unfinished block-wise upload is forgotten after this long.
    pub block_lifetime_s: u64,
    /// Max-Age sent with 5.03 when the queue is full.
    pub full_retry_after_s: u32,
}

/// CoAP over DTLS 1.2. Off (no listeners) unless credentials are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsConfig {
    /// Empty when DTLS is off.
    pub listen: Vec<SocketAddr>,
    /// The `[psk]` identity -> key file; read when the daemon starts and on
    /// SIGHUP, never by [`Config::load`].
    pub psk_file: Option<PathBuf>,
    pub certificate: Option<CertificateFiles>,
    /// Offered in this order of preference (the client's order decides).
    pub cipher_suites: Vec<CipherSuite>,
    pub handshake_timeout_s: u64,
    /// A session silent this long is closed.
    pub idle_timeout_s: u64,
    /// Peers per listener, established or handshaking.
    pub max_sessions: usize,
    /// Handshakes under way per listener; a bound of its own, since a
    /// ClientHello costs one datagram to send and ~40 KB to hold.
    pub max_handshakes: usize,
    /// New peers admitted per second per listener (and as many at once).
    pub new_peers_per_s: u32,
}

impl DtlsConfig {
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// The PSK suites to offer, in order; empty when PSK is off.
    pub fn psk_suites(&self) -> Vec<CipherSuite> {
        match self.psk_file {
            Some(_) => self
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| s.is_psk())
                .collect(),
            None => Vec::new(),
        }
    }

    /// The certificate suites to offer, in order; empty when certificates are off.
    pub fn certificate_suites(&self) -> Vec<CipherSuite> {
        match self.certificate {
            Some(_) => self
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| !s.is_psk())
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Certificate mode: the server's certificate chain and ECDSA P-256 key
/// (PEM), and the CA that devices' certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub client_ca: PathBuf,
}

/// The DTLS cipher suites the gateway can speak: the AEAD suites of the
/// CoAP profiles (RFC 7252 §9, RFC 7925). Never a CBC suite (in webrtc-dtls
/// 0.12, used before rtc-dtls, one spoofed record panicked a CBC session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    PskAes128Ccm8,
    PskAes128Ccm,
    PskAes128GcmSha256,
    EcdheEcdsaAes128Ccm8,
    EcdheEcdsaAes128GcmSha256,
}

impl CipherSuite {
    /// The default list, in order of preference.
    pub const ALL: [CipherSuite; 5] = [
        CipherSuite::PskAes128Ccm8,
        CipherSuite::PskAes128Ccm,
        CipherSuite::PskAes128GcmSha256,
        CipherSuite::EcdheEcdsaAes128Ccm8,
        CipherSuite::EcdheEcdsaAes128GcmSha256,
    ];

    /// The IANA name, as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            CipherSuite::PskAes128Ccm8 => "TLS_PSK_WITH_AES_128_CCM_8",
            CipherSuite::PskAes128Ccm => "TLS_PSK_WITH_AES_128_CCM",
            CipherSuite::PskAes128GcmSha256 => "TLS_PSK_WITH_AES_128_GCM_SHA256",
            CipherSuite::EcdheEcdsaAes128Ccm8 => "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
            CipherSuite::EcdheEcdsaAes128GcmSha256 => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        }
    }

    /// The IANA code point, as in a ClientHello.
    pub fn code(self) -> u16 {
        match self {
            CipherSuite::PskAes128Ccm8 => 0xc0a8,
            CipherSuite::PskAes128Ccm => 0xc0a4,
            CipherSuite::PskAes128GcmSha256 => 0x00a8,
            CipherSuite::EcdheEcdsaAes128Ccm8 => 0xc0ae,
            CipherSuite::EcdheEcdsaAes128GcmSha256 => 0xc02b,
        }
    }

    pub fn from_name(name: &str) -> Option<CipherSuite> {
        CipherSuite::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn is_psk(self) -> bool {
        matches!(
            self,
            CipherSuite::PskAes128Ccm8
                | CipherSuite::PskAes128Ccm
                | CipherSuite::PskAes128GcmSha256
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// As written in the file (the brokers' URLs, joined for logs).
    pub url: String,
    /// The brokers, parsed, in the order to try them (one or more).
    pub endpoints: Vec<Endpoint>,
    /// `auto` (MQTT 5, 3.1.1 for a broker that refuses 5), `5` or `3.1.1`.
    pub protocol: Protocol,
    /// An HTTP proxy to tunnel through (CONNECT), for every broker.
    pub proxy: Option<Proxy>,
    pub client_id: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub alpn: Vec<String>,
    pub keep_alive_s: u64,
    pub inflight: u16,
    /// With `{gateway}` already filled in; `None` when disabled.
    pub status_topic: Option<String>,
    pub reconnect_min_ms: u64,
    pub reconnect_max_s: u64,
    /// Largest MQTT packet we send; a message that cannot fit is dead-lettered.
    pub max_packet_size: usize,
    /// Connections a message may see closed on it before it is dead-lettered.
    pub max_attempts: u32,
}

/// Where a broker is: `mqtt://host:port`, `mqtts://host:port`,
/// `ws://host:port/path` or `wss://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// A name or an address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// The WebSocket path (`/mqtt` by default); empty for mqtt(s).
    pub path: String,
}

/// How a broker is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mqtt,
    Mqtts,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS (for sites that only let 443 out).
    Wss,
}

impl Endpoint {
    pub fn tls(&self) -> bool {
        matches!(self.scheme, Scheme::Mqtts | Scheme::Wss)
    }

    pub fn websocket(&self) -> bool {
        matches!(self.scheme, Scheme::Ws | Scheme::Wss)
    }

    /// `mqtts://host:port`, `wss://host:port/path`, for logs.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        };
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

/// Which MQTT version the uplink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 5, and 3.1.1 with a broker that refuses version 5.
    Auto,
    V5,
    V311,
}

/// An HTTP CONNECT proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// A file holding `user:password`, for proxies that ask.
    pub credentials_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The queue's directory; a relative path is relative to the current
    /// directory (systemd's WorkingDirectory).
    pub path: PathBuf,
    pub max_messages: u64,
    pub max_bytes: u64,
    pub on_full: OnFull,
    /// Ignored since 0.2 (the log store keeps no cache); accepted so that a
    /// 0.1 config still loads.
    pub cache_mb: u64,
    /// Most messages made durable by one flush.
    pub commit_max_batch: usize,
}

pub use crate::store::OnFull;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// RUST_LOG, when set, overrides this at run time.
    pub level: log::LevelFilter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The HTTP endpoint for `/metrics`, `/healthz` and `/status`; `None`
    /// when `listen = ""` turns it off.
    pub listen: Option<SocketAddr>,
    /// How many devices the device table keeps (`GET /devices`).
    pub max_devices: usize,
    /// The Unix socket through which root and the members of the group
    /// coap2mqtt read and change the dead letters; `None` when
    /// `socket = ""` turns it off.
    pub socket: Option<PathBuf>,
}

/// One `[[route]]` as written (methods and qos parsed). Validation compiled
/// it once, so [`Config::router`] can compile it again without failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub resource: String,
    pub topic: String,
    pub methods: Vec<Method>,
    pub qos: Qos,
    pub retain: bool,
    pub identity: Option<String>,
    pub identities: Vec<String>,
    pub expiry_s: Option<u32>,
    pub payload: Payload,
    pub split: bool,
}

impl RouteConfig {
    pub fn spec(&self) -> RouteSpec<'_> {
        RouteSpec {
            resource: &self.resource,
            topic: &self.topic,
            methods: &self.methods,
            qos: self.qos,
            retain: self.retain,
            identity: self.identity.as_deref(),
            identities: &self.identities,
            expiry_s: self.expiry_s,
            payload: self.payload,
            split: self.split,
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`, reporting every problem found.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = read_text(path, MAX_CONFIG_BYTES)
            .map_err(|message| ConfigErrors::single(path, "", message))?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `source` is the file named in problems.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigErrors> {
        let mut report = document::Report::new(source, text);
        match document::parse(text) {
            Err(e) => report.add(e.span.as_ref(), "", e.message),
            Ok(root) => {
                let config = sections::read(&root, &mut report, source.to_path_buf());
                if report.problems.is_empty() {
                    return Ok(config);
                }
            }
        }
        let mut problems = report.problems;
        problems.sort_by_key(|p| p.line);
        Err(ConfigErrors { problems })
    }

    /// The routes, compiled, in file order.
    ///
    /// A `Config` from [`Config::load`] or [`Config::parse`] has only routes
    /// that compile; one edited into something invalid afterwards is logged
    /// and left out rather than taking the daemon down.
    pub fn router(&self) -> Router {
        let routes = self
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, route)| match Route::new(&route.spec()) {
                Ok(compiled) => Some(compiled),
                Err(e) => {
                    log::error!(
                        "route[{}].{}: {}; route left out",
                        i + 1,
                        e.key(),
                        e.detail()
                    );
                    None
                }
            })
            .collect();
        Router::new(self.gateway.id.clone(), routes)
    }
}

impl MqttConfig {
    /// The password from `password_file`, without its trailing newline;
    /// `None` when no file is configured.
    pub fn read_password(&self) -> Result<Option<String>, ConfigErrors> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let fail = |message: String| ConfigErrors::single(path, "mqtt.password_file", message);
        let mut password = read_text(path, MAX_PASSWORD_BYTES as u64 + 2).map_err(fail)?;
        if password.ends_with('\n') {
            password.pop();
            if password.ends_with('\r') {
                password.pop();
            }
        }
        if password.is_empty() {
            return Err(fail("is empty".into()));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(fail(
                "holds more than 65535 bytes, the most MQTT can send".into(),
            ));
        }
        warn_if_world_readable(path);
        Ok(Some(password))
    }
}

#[cfg(unix)]
fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            log::warn!(
                "{}: the MQTT password is readable by every user of this machine",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_: &Path) {}

/// A whole UTF-8 file of at most `limit` bytes.
fn read_text(path: &Path, limit: u64) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read: {e}");
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "is larger than {limit} bytes; is it the right file?"
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        format!("is not UTF-8 text (invalid byte at offset {at})")
    })
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file as given.
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when there is one.
    pub line: Option<usize>,
    /// The key path (`mqtt.url`, `route[2].topic`); empty when the problem
    /// is the file itself.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    /// `coap2mqtt.toml:14: route[2].topic: unknown variable {devce}`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a config file, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    fn single(file: &Path, key: &str, message: String) -> ConfigErrors {
        ConfigErrors {
            problems: vec![Problem {
                file: file.to_path_buf(),
                line: None,
                key: key.to_string(),
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
