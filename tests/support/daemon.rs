//! Runs the real coap2mqtt binary as `coap2mqtt run --config FILE`, the
//! way systemd would, and composes its configuration.
//!
//! Each [`Daemon`] owns a temp dir holding its config, its log (stdout and
//! stderr, `RUST_LOG=debug` unless the test environment sets RUST_LOG) and
//! its store. The store lives there so that [`Daemon::restart`] finds the
//! same queue again, and every test still starts from an empty one.
//!
//! The config contract used by the tests ([`DaemonConfig`]):
//! `[gateway] id`; `[coap] listen, max_payload`; `[mqtt] url, client_id,
//! keep_alive_s, inflight, status_topic, ca_file, client_cert, client_key`;
//! `[store] path, max_messages, max_bytes, on_full`; `[[route]] resource,
//! topic, methods, qos, retain`. The store path may be given as
//! [`STORE_PLACEHOLDER`], which the launcher replaces with its own store
//! directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;
use toml::{Table, Value};

use super::coap::CoapClient;
use super::{
    kill_and_reap, read_lossy, run_with_timeout, send_sigterm, spawn_logged, try_wait_until,
    wait_child, RunOutcome,
};

/// The daemon binary Cargo built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_coap2mqtt");

/// The binary [`Daemon::start`] runs: `COAP2MQTT_BINARY` when set (a long
/// campaign runs a copy, so that a rebuild meanwhile cannot change the
/// daemon under it), else [`BINARY`].
pub fn binary() -> PathBuf {
    std::env::var_os("COAP2MQTT_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BINARY))
}

/// In a config string, stands for the daemon's own store directory.
pub const STORE_PLACEHOLDER: &str = "@STORE@";

/// In a config string, stands for the daemon's admin socket, in its temp
/// dir ([`Daemon::admin_socket`]); a config naming no admin socket gets
/// this one, so that parallel test daemons never share the packaged
/// default under /run.
pub const ADMIN_SOCKET_PLACEHOLDER: &str = "@ADMIN_SOCKET@";

/// How long the daemon may take to answer a CoAP ping after start.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running coap2mqtt. Dropping it kills it (SIGKILL).
pub struct Daemon {
    binary: PathBuf,
    /// RUST_LOG for the daemon: the test environment's, else `debug`;
    /// `None` leaves the config's `[log] level` in charge.
    rust_log: Option<String>,
    dir: TempDir,
    config_path: PathBuf,
    coap_addr: SocketAddr,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    /// Writes `config_toml` (with [`STORE_PLACEHOLDER`] replaced) and starts
    /// the daemon; returns once it answers a CoAP ping, panics with its log
    /// otherwise.
    pub fn start(config_toml: &str) -> Daemon {
        Daemon::start_with_binary(&binary(), config_toml)
    }

    /// [`start`](Self::start) with another executable taking the same
    /// `run --config FILE` arguments (e.g. a release build).
    pub fn start_with_binary(binary: &Path, config_toml: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("coap2mqtt-")
            .tempdir()
            .expect("create a temp dir for the daemon");
        let config = fill_placeholders(config_toml, dir.path());
        let coap_addr = first_coap_listen(&config);
        let config_path = dir.path().join("coap2mqtt.toml");
        std::fs::write(&config_path, &config).expect("write the daemon config");
        let mut daemon = Daemon {
            binary: binary.to_path_buf(),
            rust_log: Some(std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".into())),
            dir,
            config_path,
            coap_addr,
            child: None,
            starts: 0,
        };
        daemon.launch();
        daemon
    }

    pub fn start_config(config: &DaemonConfig) -> Daemon {
        Daemon::start(&config.render())
    }

    /// Restarts without RUST_LOG, so that `[log] level` decides (for tests
    /// of logging itself).
    pub fn restart_without_rust_log(&mut self) {
        self.rust_log = None;
        self.restart();
    }

    /// Where the daemon listens for CoAP (its first `[coap] listen`).
    pub fn coap_addr(&self) -> SocketAddr {
        self.coap_addr
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The directory [`STORE_PLACEHOLDER`] stands for.
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The path [`ADMIN_SOCKET_PLACEHOLDER`] stands for.
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Everything the daemon printed, across restarts.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// Waits until the log contains `needle`; panics with the log if not.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        if try_wait_until(timeout, || self.log().contains(needle)).is_err() {
            panic!(
                "the daemon log did not show {needle:?} within {timeout:?}; log:\n{}",
                self.log()
            );
        }
    }

    /// SIGKILL: a crash or power cut, as far as the process can tell.
    pub fn kill9(&mut self) {
        let mut child = self
            .child
            .take()
            .expect("kill9(): the daemon is not running");
        kill_and_reap(&mut child);
    }

    /// SIGTERM, then waits up to `timeout` for the exit status. Panics with
    /// the log (after SIGKILL) if the daemon does not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("terminate(): the daemon is not running");
        send_sigterm(&child);
        match wait_child(&mut child, timeout) {
            Some(status) => status,
            None => {
                kill_and_reap(&mut child);
                panic!(
                    "the daemon did not exit within {timeout:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Waits up to `timeout` for the daemon to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .expect("wait_exit(): the daemon is not running");
        let status = wait_child(child, timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Starts the daemon again with the same config and store. If it is
    /// still running it is killed with SIGKILL first; call
    /// [`terminate`](Self::terminate) before for a clean restart.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        self.launch();
    }

    /// Replaces the config (placeholder honoured) and restarts.
    pub fn restart_with(&mut self, config_toml: &str) {
        let config = fill_placeholders(config_toml, self.dir.path());
        self.coap_addr = first_coap_listen(&config);
        std::fs::write(&self.config_path, &config).expect("write the daemon config");
        self.restart();
    }

    fn launch(&mut self) {
        self.starts += 1;
        let log_path = self.log_path();
        let banner = format!(
            "=== test harness: start #{} of {} run --config {} ===\n",
            self.starts,
            self.binary.display(),
            self.config_path.display()
        );
        append(&log_path, &banner);
        let mut command = Command::new(&self.binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path());
        match &self.rust_log {
            Some(spec) => command.env("RUST_LOG", spec),
            None => command.env_remove("RUST_LOG"),
        };
        // Not under systemd: no readiness socket, no journal, no watchdog.
        for var in [
            "NOTIFY_SOCKET",
            "JOURNAL_STREAM",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "LISTEN_FDS",
            "LISTEN_PID",
        ] {
            command.env_remove(var);
        }
        let mut child = spawn_logged(&mut command, &log_path);

        let mut client = CoapClient::new(self.coap_addr);
        let mut exited = None;
        let serving = try_wait_until(STARTUP_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            client.ping(Duration::from_millis(200))
        });
        if let Some(status) = exited {
            panic!(
                "the daemon exited with {status} during start-up; log:\n{}",
                self.log()
            );
        }
        if serving.is_err() {
            kill_and_reap(&mut child);
            panic!(
                "the daemon did not answer a CoAP ping on {} within {STARTUP_TIMEOUT:?}; log:\n{}",
                self.coap_addr,
                self.log()
            );
        }
        self.child = Some(child);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            kill_and_reap(child);
        }
    }
}

/// `GET path` on the daemon's admin endpoint: (status code, body).
pub fn admin_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to the admin endpoint 127.0.0.1:{port}: {e}"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Runs the binary with any arguments (e.g. a config check) to completion.
pub fn run_binary(args: &[&str], timeout: Duration) -> RunOutcome {
    run_with_timeout(BINARY, args, timeout)
}

/// The config with the store and admin socket placeholders replaced by
/// paths in the daemon's directory `dir`. A config that does not say where
/// the admin socket goes gets it in `dir` too (`admin.socket` added after
/// the `[admin]` header, or in an `[admin]` table at the end), so that no
/// test daemon uses the packaged default under /run.
fn fill_placeholders(config_toml: &str, dir: &Path) -> String {
    let mut config = config_toml.to_string();
    let names_a_socket = config
        .lines()
        .any(|l| l.trim_start().starts_with("socket ") || l.trim_start().starts_with("socket="));
    if !names_a_socket {
        let key = format!("socket = \"{ADMIN_SOCKET_PLACEHOLDER}\"");
        config = match config.lines().position(|l| l.trim() == "[admin]") {
            Some(at) => {
                let mut lines: Vec<&str> = config.lines().collect();
                lines.insert(at + 1, &key);
                lines.join("\n") + "\n"
            }
            None => format!("{config}\n[admin]\n{key}\n"),
        };
    }
    config
        .replace(STORE_PLACEHOLDER, &dir.join("store").display().to_string())
        .replace(
            ADMIN_SOCKET_PLACEHOLDER,
            &dir.join("admin.sock").display().to_string(),
        )
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The first `[coap] listen` address; an unspecified IP means loopback.
fn first_coap_listen(config: &str) -> SocketAddr {
    let table: Table = config
        .parse()
        .unwrap_or_else(|e| panic!("the test's daemon config is not TOML: {e}\n{config}"));
    let listen = table
        .get("coap")
        .and_then(|c| c.get("listen"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or_else(|| {
            panic!("the test's daemon config has no [coap] listen = [\"…\"]:\n{config}")
        });
    let mut addr: SocketAddr = listen
        .parse()
        .unwrap_or_else(|e| panic!("[coap] listen {listen:?} is not an address: {e}"));
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    addr
}

/// One `[[route]]` table.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub resource: String,
    pub topic: String,
    pub methods: Option<Vec<String>>,
    pub qos: Option<u8>,
    pub retain: Option<bool>,
    /// Any other key of the `[[route]]` table.
    pub extra: Table,
}

impl RouteConfig {
    pub fn new(resource: &str, topic: &str) -> RouteConfig {
        RouteConfig {
            resource: resource.into(),
            topic: topic.into(),
            methods: None,
            qos: None,
            retain: None,
            extra: Table::new(),
        }
    }

    /// Sets any other key of the route (`expiry_s`, `payload`, ...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> RouteConfig {
        self.extra.insert(key.into(), value.into());
        self
    }

    pub fn methods(mut self, methods: &[&str]) -> RouteConfig {
        self.methods = Some(methods.iter().map(|m| m.to_string()).collect());
        self
    }

    pub fn qos(mut self, qos: u8) -> RouteConfig {
        self.qos = Some(qos);
        self
    }

    pub fn retain(mut self, retain: bool) -> RouteConfig {
        self.retain = Some(retain);
        self
    }
}

/// Builds the daemon's TOML. Unset optional keys are left out, so the
/// daemon's defaults apply; `store_path` defaults to [`STORE_PLACEHOLDER`].
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub gateway_id: String,
    pub coap_listen: Vec<SocketAddr>,
    pub max_payload: Option<u64>,
    pub mqtt_url: String,
    pub client_id: Option<String>,
    pub keep_alive_s: Option<u64>,
    pub inflight: Option<u64>,
    pub status_topic: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub store_path: String,
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
    pub on_full: Option<String>,
    /// `[admin] listen = "127.0.0.1:PORT"` (metrics, /healthz).
    pub admin_port: Option<u16>,
    /// Any other key of `[mqtt]` (`protocol`, `proxy`, a list as `url`...).
    pub mqtt_extra: Table,
    pub routes: Vec<RouteConfig>,
}

impl DaemonConfig {
    /// CoAP on 127.0.0.1:`coap_port`, plain MQTT to 127.0.0.1:`mqtt_port`,
    /// gateway id "test-gw", no routes yet.
    pub fn new(coap_port: u16, mqtt_port: u16) -> DaemonConfig {
        DaemonConfig {
            gateway_id: "test-gw".into(),
            coap_listen: vec![SocketAddr::from(([127, 0, 0, 1], coap_port))],
            max_payload: None,
            mqtt_url: format!("mqtt://127.0.0.1:{mqtt_port}"),
            client_id: None,
            keep_alive_s: None,
            inflight: None,
            status_topic: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            store_path: STORE_PLACEHOLDER.into(),
            max_messages: None,
            max_bytes: None,
            on_full: None,
            admin_port: None,
            mqtt_extra: Table::new(),
            routes: Vec::new(),
        }
    }

    /// `mqtts://127.0.0.1:PORT` trusting `ca_file`.
    pub fn mqtts(mut self, mqtt_port: u16, ca_file: &Path) -> DaemonConfig {
        self.mqtt_url = format!("mqtts://127.0.0.1:{mqtt_port}");
        self.ca_file = Some(ca_file.to_path_buf());
        self
    }

    pub fn client_identity(mut self, cert: &Path, key: &Path) -> DaemonConfig {
        self.client_cert = Some(cert.to_path_buf());
        self.client_key = Some(key.to_path_buf());
        self
    }

    /// Sets any other key of `[mqtt]`.
    pub fn mqtt(mut self, key: &str, value: impl Into<Value>) -> DaemonConfig {
        self.mqtt_extra.insert(key.into(), value.into());
        self
    }

    pub fn route(mut self, route: RouteConfig) -> DaemonConfig {
        self.routes.push(route);
        self
    }

    pub fn render(&self) -> String {
        fn put<T: Into<Value>>(table: &mut Table, key: &str, value: Option<T>) {
            if let Some(value) = value {
                table.insert(key.into(), value.into());
            }
        }
        fn int(v: Option<u64>) -> Option<Value> {
            v.map(|v| Value::Integer(i64::try_from(v).expect("config integer fits in i64")))
        }
        fn path(p: &Option<PathBuf>) -> Option<String> {
            p.as_ref().map(|p| p.display().to_string())
        }

        let mut gateway = Table::new();
        gateway.insert("id".into(), self.gateway_id.clone().into());

        let mut coap = Table::new();
        let listen: Vec<Value> = self
            .coap_listen
            .iter()
            .map(|a| Value::from(a.to_string()))
            .collect();
        coap.insert("listen".into(), Value::Array(listen));
        put(&mut coap, "max_payload", int(self.max_payload));

        let mut mqtt = Table::new();
        mqtt.insert("url".into(), self.mqtt_url.clone().into());
        put(&mut mqtt, "client_id", self.client_id.clone());
        put(&mut mqtt, "keep_alive_s", int(self.keep_alive_s));
        put(&mut mqtt, "inflight", int(self.inflight));
        put(&mut mqtt, "status_topic", self.status_topic.clone());
        put(&mut mqtt, "ca_file", path(&self.ca_file));
        put(&mut mqtt, "client_cert", path(&self.client_cert));
        put(&mut mqtt, "client_key", path(&self.client_key));
        for (k, v) in &self.mqtt_extra {
            mqtt.insert(k.clone(), v.clone());
        }

        let mut store = Table::new();
        store.insert("path".into(), self.store_path.clone().into());
        put(&mut store, "max_messages", int(self.max_messages));
        put(&mut store, "max_bytes", int(self.max_bytes));
        put(&mut store, "on_full", self.on_full.clone());

        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut route = Table::new();
                route.insert("resource".into(), r.resource.clone().into());
                route.insert("topic".into(), r.topic.clone().into());
                let methods = r
                    .methods
                    .as_ref()
                    .map(|m| Value::Array(m.iter().map(|s| Value::from(s.as_str())).collect()));
                put(&mut route, "methods", methods);
                put(
                    &mut route,
                    "qos",
                    r.qos.map(|q| Value::Integer(i64::from(q))),
                );
                put(&mut route, "retain", r.retain);
                for (k, v) in &r.extra {
                    route.insert(k.clone(), v.clone());
                }
                Value::Table(route)
            })
            .collect();

        let mut root = Table::new();
        root.insert("gateway".into(), Value::Table(gateway));
        root.insert("coap".into(), Value::Table(coap));
        root.insert("mqtt".into(), Value::Table(mqtt));
        root.insert("store".into(), Value::Table(store));
        let mut admin = Table::new();
        if let Some(port) = self.admin_port {
            admin.insert("listen".into(), format!("127.0.0.1:{port}").into());
        }
        admin.insert("socket".into(), ADMIN_SOCKET_PLACEHOLDER.into());
        root.insert("admin".into(), Value::Table(admin));
        if !routes.is_empty() {
            root.insert("route".into(), Value::Array(routes));
        }
        toml::to_string(&root).expect("render the daemon config as TOML")
    }
}
