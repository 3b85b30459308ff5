//! Test harness shared by the integration tests: real brokers, real CoAP
//! clients, a fault-injecting TCP proxy and a launcher for the daemon.
//!
//! Everything here runs real processes on loopback only (127.0.0.1), so the
//! tests exercise the daemon the way a deployment does. Every process and
//! thread a helper starts is stopped in its `Drop`, also when a test panics.
//! Waits have generous timeouts and panic with a message saying what was
//! awaited; no test should assert on timing.
//!
//! Each integration test includes this with `mod support;` and uses only the
//! parts it needs, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod broker;
pub mod certs;
pub mod coap;
pub mod coap_cli;
pub mod coap_client;
pub mod daemon;
pub mod disk;
pub mod dtls_hello;
pub mod powercut;
pub mod proxy;
pub mod subscriber;

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The default patience for anything a test waits for. Generous on purpose:
/// CI machines are slow and a timeout should mean "broken", never "busy".
pub const WAIT: Duration = Duration::from_secs(30);

/// How often polling waits look again.
const POLL: Duration = Duration::from_millis(10);

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, read, released).
pub fn free_tcp_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 (tcp) to find a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound TCP listener")
        .port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago (bound, read, released).
pub fn free_udp_port() -> u16 {
    let socket =
        UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 (udp) to find a free port");
    socket
        .local_addr()
        .expect("local_addr of a bound UDP socket")
        .port()
}

/// Polls `f` until it returns true; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, f: impl FnMut() -> bool) {
    if let Err(waited) = try_wait_until(timeout, f) {
        panic!("timed out after {waited:?} waiting for: {what}");
    }
}

/// Polls `f` until it returns true; returns how long it waited as the error
/// after `timeout`. For callers that want to add diagnostics to the panic.
pub fn try_wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(start.elapsed());
        }
        std::thread::sleep(POLL);
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, for
/// processes a test starts directly.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        ChildGuard(child)
    }

    /// `None` while it is still running.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().expect("try_wait on a child process")
    }

    /// Waits up to `timeout`; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.0, timeout)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// What a command run with [`run_with_timeout`] did.
#[derive(Debug)]
pub struct RunOutcome {
    /// `None` if it had to be killed because it exceeded the timeout.
    pub status: Option<ExitStatus>,
    /// stdout and stderr interleaved in the order they were written.
    pub output: String,
}

impl RunOutcome {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `program args…` with stdout and stderr going to one file (so their
/// interleaving is kept), kills it after `timeout`, and returns what it wrote.
pub fn run_with_timeout(program: &str, args: &[&str], timeout: Duration) -> RunOutcome {
    let scratch = tempfile::tempdir().expect("create a temp dir for command output");
    let out_path = scratch.path().join("output");
    let mut child = spawn_logged(Command::new(program).args(args), &out_path);
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        kill_and_reap(&mut child);
    }
    RunOutcome {
        status,
        output: read_lossy(&out_path),
    }
}

/// Spawns `cmd` with stdin closed and stdout+stderr appended to `log`.
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open log file {}: {e}", log.display()));
    let file2 = file.try_clone().expect("clone a log file handle");
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()))
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    let _ = try_wait_until(timeout, || {
        status = child.try_wait().expect("try_wait on a child process");
        status.is_some()
    });
    status
}

/// SIGKILL and reap; quiet, because it also runs in `Drop` during unwinding.
pub(crate) fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Sends SIGTERM with the system's `kill`, so the harness needs no libc.
pub(crate) fn send_sigterm(child: &Child) {
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run `kill -TERM`");
    // A process that exited just before is not an error worth failing on.
    if !status.success() {
        eprintln!("kill -TERM {pid} exited with {status}");
    }
}

/// A file's contents as text, or a note that it could not be read.
pub(crate) fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
