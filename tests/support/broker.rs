//! A real mosquitto per test, on its own port, config, log and persistence
//! directory.
//!
//! Why mosquitto and not an in-process fake: the daemon's guarantees are
//! about what a real broker ends up holding (QoS 1, sessions, restarts).
//!
//! Two things learnt the hard way (see docs/ARCHITECTURE.md, "Crate facts"):
//! - Started as root, mosquitto drops to the `mosquitto` user and can then
//!   neither write the root-owned temp dir (persistence) nor open its log
//!   file; it keeps running without them. The config therefore says
//!   `user root`. Started as any other user the line is ignored (checked:
//!   run as `nobody`, it serves and persists normally).
//! - Persistence is written on a clean shutdown (SIGTERM) only, so
//!   [`Broker::stop`] keeps queued QoS 1 messages and sessions, while
//!   [`Broker::kill`] loses what changed since start. Tests that need every
//!   change on disk can add `autosave_on_changes true` and
//!   `autosave_interval 1` through [`BrokerOptions::extra_config`] (slow
//!   with thousands of messages: each save rewrites the whole database).
//!
//! Readiness is "this start logged `running` and the port accepts TCP"; the
//! probe connection shows up in the log as a client that went away (for
//! TLS: a failed handshake). A first start that loses its port to a
//! parallel test tries another free port.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use super::certs::Certs;
use super::{
    free_tcp_port, kill_and_reap, read_lossy, send_sigterm, spawn_logged, try_wait_until,
    wait_child, WAIT,
};

/// TLS settings of the broker's only listener.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Reject clients without a certificate signed by `ca_file`.
    pub require_certificate: bool,
    /// Use the client certificate's CN as the MQTT user name.
    pub use_identity_as_username: bool,
}

/// Everything [`Broker::start_with`] can vary.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    pub tls: Option<BrokerTls>,
    /// Extra lines appended to the generated mosquitto.conf; `@DIR@`
    /// stands for the broker's directory.
    pub extra_config: String,
    /// Files written into the broker's directory before it starts (an ACL
    /// file, say): (name, content).
    pub files: Vec<(String, String)>,
}

/// A running (or stopped, restartable) mosquitto. Dropping it kills it.
pub struct Broker {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Plain MQTT on a free port.
    pub fn start() -> Broker {
        Broker::start_with(BrokerOptions::default())
    }

    /// MQTT over TLS with the test CA's server certificate. With
    /// `require_client_cert`, clients must present a certificate from the
    /// test CA, and its CN becomes their user name.
    pub fn start_tls(certs: &Certs, require_client_cert: bool) -> Broker {
        Broker::start_with(BrokerOptions {
            tls: Some(BrokerTls {
                ca_file: certs.ca_cert.clone(),
                cert_file: certs.server_cert.clone(),
                key_file: certs.server_key.clone(),
                require_certificate: require_client_cert,
                use_identity_as_username: require_client_cert,
            }),
            extra_config: String::new(),
            files: Vec::new(),
        })
    }

    pub fn start_with(options: BrokerOptions) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("mosquitto-")
            .tempdir()
            .expect("create a temp dir for mosquitto");
        let mut broker = Broker {
            dir,
            port: 0,
            child: None,
        };
        // The free port can be taken by a parallel test between our probe
        // and mosquitto's bind: then mosquitto exits at once, and a new port
        // is tried. Only the first start may move; restarts keep the port.
        for attempt in 1..=PORT_ATTEMPTS {
            broker.port = free_tcp_port();
            let config = render_config(broker.port, broker.dir.path(), &options);
            std::fs::write(broker.dir.path().join("mosquitto.conf"), config)
                .expect("write mosquitto.conf");
            for (name, content) in &options.files {
                std::fs::write(broker.dir.path().join(name), content).expect("write a broker file");
            }
            match broker.try_launch() {
                Ok(()) => return broker,
                Err(Launch::PortTaken) if attempt < PORT_ATTEMPTS => continue,
                Err(failure) => broker.fail(failure),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The directory with mosquitto.conf, the log and mosquitto.db.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM and wait, so mosquitto writes its persistence file.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("stop(): the broker is not running");
        send_sigterm(&child);
        match wait_child(&mut child, WAIT) {
            Some(status) => status,
            None => {
                kill_and_reap(&mut child);
                panic!(
                    "mosquitto did not exit within {WAIT:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// SIGKILL: a crash. Nothing since the last save is persisted.
    pub fn kill(&mut self) {
        let mut child = self
            .child
            .take()
            .expect("kill(): the broker is not running");
        kill_and_reap(&mut child);
    }

    /// Starts mosquitto again on the same port with the same persistence
    /// directory (after [`stop`](Self::stop) or [`kill`](Self::kill)).
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again(): the broker is still running"
        );
        self.launch();
    }

    /// mosquitto's own log followed by whatever it wrote to stdout/stderr
    /// (config errors appear only there).
    pub fn log(&self) -> String {
        let mut text = read_lossy(&self.dir.path().join("mosquitto.log"));
        let stderr = read_lossy(&self.dir.path().join("mosquitto.stderr"));
        if !stderr.trim().is_empty() {
            text.push_str("\n--- mosquitto stdout/stderr ---\n");
            text.push_str(&stderr);
        }
        text
    }

    fn launch(&mut self) {
        if let Err(failure) = self.try_launch() {
            self.fail(failure);
        }
    }

    /// Starts mosquitto and waits until this start of it logged `running`
    /// (its listeners are open) and accepts TCP. Counting this start's own
    /// `running` line matters: a bare TCP probe can be answered by another
    /// process that grabbed the port, and the log holds earlier starts'
    /// lines after a restart.
    fn try_launch(&mut self) -> Result<(), Launch> {
        let log_path = self.dir.path().join("mosquitto.log");
        let runs_before = count_running(&read_lossy(&log_path));
        let config = self.dir.path().join("mosquitto.conf");
        let mut child = spawn_logged(
            Command::new("mosquitto").arg("-c").arg(&config),
            &self.dir.path().join("mosquitto.stderr"),
        );
        let addr = self.addr();
        let mut exited = None;
        let ready = try_wait_until(WAIT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            count_running(&read_lossy(&log_path)) > runs_before
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if let Some(status) = exited {
            let log = self.log();
            return Err(if log.contains("Address already in use") {
                Launch::PortTaken
            } else {
                Launch::Exited(status)
            });
        }
        if ready.is_err() {
            kill_and_reap(&mut child);
            return Err(Launch::NotReady);
        }
        self.child = Some(child);
        Ok(())
    }

    fn fail(&self, failure: Launch) -> ! {
        let addr = self.addr();
        match failure {
            Launch::PortTaken => panic!(
                "mosquitto could not bind {addr}: another process holds the port; log:\n{}",
                self.log()
            ),
            Launch::Exited(status) => panic!(
                "mosquitto exited with {status} during start-up; log:\n{}",
                self.log()
            ),
            Launch::NotReady => panic!(
                "mosquitto did not log 'running' and accept TCP on {addr} within {WAIT:?}; log:\n{}",
                self.log()
            ),
        }
    }
}

/// How many fresh ports a first start tries before giving up.
const PORT_ATTEMPTS: u32 = 5;

/// Why a start of mosquitto failed.
enum Launch {
    PortTaken,
    Exited(ExitStatus),
    NotReady,
}

/// mosquitto logs `mosquitto version X running` once its listeners are open.
fn count_running(log: &str) -> usize {
    log.lines().filter(|l| l.ends_with(" running")).count()
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            kill_and_reap(child);
        }
    }
}

fn render_config(port: u16, dir: &Path, options: &BrokerOptions) -> String {
    let dir = dir.display();
    let mut config = format!(
        "# Generated by tests/support/broker.rs\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence true\n\
         persistence_location {dir}/\n\
         user root\n\
         log_dest file {dir}/mosquitto.log\n\
         log_type all\n\
         log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
    );
    if let Some(tls) = &options.tls {
        config.push_str(&format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\nuse_identity_as_username {}\n",
            tls.ca_file.display(),
            tls.cert_file.display(),
            tls.key_file.display(),
            tls.require_certificate,
            tls.use_identity_as_username,
        ));
    }
    if !options.extra_config.is_empty() {
        config.push_str(&options.extra_config.replace("@DIR@", &dir.to_string()));
        config.push('\n');
    }
    config
}
