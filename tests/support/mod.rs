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
pub mod chromium;
pub mod coap;
pub mod coap_cli;
pub mod coap_client;
pub mod daemon;
pub mod disk;
pub mod dtls_hello;
pub mod nats;
pub mod powercut;
pub mod proxy;
pub mod rabbitmq;
pub mod subscriber;
pub mod tinyproxy;

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
/// See [`unassigned_port`] for why it is not the kernel's pick.
pub fn free_tcp_port() -> u16 {
    unassigned_port(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A UDP port on 127.0.0.1 that was free a moment ago (bound, read, released).
/// See [`unassigned_port`] for why it is not the kernel's pick.
pub fn free_udp_port() -> u16 {
    unassigned_port(|port| UdpSocket::bind(("127.0.0.1", port)).is_ok())
}

/// A port below the kernel's ephemeral range that `bindable` accepts.
///
/// A daemon a test restarts binds its port again after it was released; a
/// port the kernel handed out (bind to port 0) is one it hands out again to
/// the next client socket anywhere on the machine, and a 2,000-cut power-loss
/// campaign lost its run to exactly that ("Address already in use" at
/// restart #1251). Ports below `ip_local_port_range` are never handed out
/// implicitly, so only another test's random pick can take one.
fn unassigned_port(bindable: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let seed = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos().into());
    for _ in 0..1000 {
        // splitmix64 over (seed, draw number): distinct processes and
        // threads draw distinct sequences.
        let mut x = seed.wrapping_add(
            DRAWS
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let port = low + (x % u64::from(high - low)) as u16;
        if bindable(port) {
            return port;
        }
    }
    panic!("no bindable port on 127.0.0.1 in {low}..{high} after 1000 draws");
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
