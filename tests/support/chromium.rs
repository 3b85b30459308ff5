//! Debian's chromium, headless, as a real browser for the status page: it
//! runs the page's JavaScript (fetch, timers) and hands back the DOM it
//! rendered, or a screenshot. scripts/test installs it (`chromium`).
//!
//! Each run gets its own profile directory and its own process group, and
//! the whole group is killed when the run ends or the test fails (chromium
//! starts a zygote, renderers and a GPU process beside the one we spawn).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_child;

/// How long one headless run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The browser binary.
pub fn binary() -> PathBuf {
    PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or_else(|| "chromium".into()))
}

/// A chromium process group, killed (SIGKILL, the whole group) on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &pgid])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs headless chromium on `url` with `args`, letting the page run for
/// `budget` of virtual time; returns its stdout. Panics with its stderr if
/// it fails or hangs.
fn run(url: &str, args: &[String], budget: Duration, scratch: &Path) -> String {
    let out = scratch.join("chromium.out");
    let err = scratch.join("chromium.err");
    let mut command = Command::new(binary());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("chromium stdout file"))
        .stderr(std::fs::File::create(&err).expect("chromium stderr file"))
        .process_group(0);
    let child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "start {}: {e} (scripts/test installs chromium)",
            binary().display()
        )
    });
    let mut group = Group(child);
    let status = wait_child(&mut group.0, RUN_TIMEOUT);
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    match status {
        Some(s) if s.success() => std::fs::read_to_string(&out).unwrap_or_default(),
        Some(s) => panic!("chromium exited with {s}:\n{stderr}"),
        None => panic!("chromium did not finish within {RUN_TIMEOUT:?}:\n{stderr}"),
    }
}

/// The DOM of `url` after its scripts ran for `budget` (virtual time).
pub fn dump_dom(url: &str, budget: Duration, scratch: &Path) -> String {
    run(url, &["--dump-dom".to_string()], budget, scratch)
}

/// A PNG of `url` at `width` x `height` after `budget`, written to `png`.
pub fn screenshot(
    url: &str,
    budget: Duration,
    png: &Path,
    width: u32,
    height: u32,
    scratch: &Path,
) {
    run(
        url,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
            "--hide-scrollbars".to_string(),
        ],
        budget,
        scratch,
    );
    assert!(
        png.exists(),
        "chromium wrote no screenshot at {}",
        png.display()
    );
}
