//! The command line, as an operator meets it: `--version`, `check-config`
//! on the shipped config and on broken ones (every problem printed as
//! `file:line: key: message`, exit 2), `status` against a running daemon,
//! and every error on lines of its own followed by what to do. (`psk add`/`psk list` and a world-readable PSK file refused at
//! `run` are in tests/dtls.rs, with the rest of DTLS.)

mod support;

use std::net::SocketAddr;
use std::path::Path;

use support::broker::Broker;
use support::daemon::{run_binary, Daemon, DaemonConfig, RouteConfig};
use support::{free_tcp_port, free_udp_port, RunOutcome, WAIT};

fn exit_code(run: &RunOutcome) -> Option<i32> {
    run.status.and_then(|s| s.code())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn shipped_config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/coap2mqtt.toml")
}

#[test]
fn version_prints_the_crate_version() {
    let run = run_binary(&["--version"], WAIT);
    assert_eq!(exit_code(&run), Some(0), "{}", run.output);
    assert_eq!(
        run.output.trim_end(),
        format!("coap2mqtt {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_shipped_config_passes_check_config() {
    let config = shipped_config();
    let run = run_binary(&["check-config", "--config", path(&config)], WAIT);
    assert_eq!(exit_code(&run), Some(0), "{}", run.output);
    assert!(run.output.contains(": OK"), "{}", run.output);
}

/// A valid config, line by line, so that a broken line's number is known.
const VALID: &[&str] = &[
    "[gateway]",                          // 1
    "id = \"gw\"",                        // 2
    "[coap]",                             // 3
    "listen = [\"127.0.0.1:5683\"]",      // 4
    "[mqtt]",                             // 5
    "url = \"mqtt://127.0.0.1:1883\"",    // 6
    "[store]",                            // 7
    "path = \"/tmp/unused-queue\"",       // 8
    "on_full = \"reject\"",               // 9
    "[[route]]",                          // 10
    "resource = \"s/{device}/{metric}\"", // 11
    "topic = \"site/{device}/{metric}\"", // 12
];

/// Writes VALID with `edits` (1-based line, new text) applied, runs
/// check-config and returns (file, outcome).
fn check(edits: &[(usize, &str)]) -> (tempfile::TempDir, String, RunOutcome) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.toml");
    let mut lines: Vec<String> = VALID.iter().map(|l| l.to_string()).collect();
    for (line, text) in edits {
        lines[line - 1] = text.to_string();
    }
    std::fs::write(&file, lines.join("\n") + "\n").expect("write config");
    let run = run_binary(&["check-config", "--config", path(&file)], WAIT);
    let name = file.display().to_string();
    (dir, name, run)
}

#[test]
fn the_valid_base_config_passes() {
    let (_dir, _name, run) = check(&[]);
    assert_eq!(exit_code(&run), Some(0), "{}", run.output);
}

#[test]
fn check_config_reports_each_problem_with_file_line_and_key() {
    let cases: &[(usize, &str, &str, &str)] = &[
        (12, "topic = \"site/{nope}\"", "route[1].topic", "{nope}"),
        (6, "url = \"http://x\"", "mqtt.url", "scheme"),
        (2, "idd = \"gw\"", "gateway.idd", "unknown key"),
        (9, "on_full = \"explode\"", "store.on_full", "explode"),
        (
            4,
            "listen = [\"127.0.0.1:5683\", \"127.0.0.1:5683\"]",
            "coap.listen",
            "twice",
        ),
    ];
    for (line, text, key, message) in cases {
        let (_dir, name, run) = check(&[(*line, text)]);
        assert_eq!(exit_code(&run), Some(2), "{text}: {}", run.output);
        let prefix = format!("{name}:{line}: {key}: ");
        assert!(
            run.output
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(message)),
            "{text}: expected a line starting {prefix:?} mentioning {message:?}:\n{}",
            run.output
        );
    }
}

#[test]
fn check_config_prints_every_problem_not_just_the_first() {
    let (_dir, name, run) = check(&[
        (2, "idd = \"gw\""),
        (6, "url = \"http://x\""),
        (9, "on_full = \"explode\""),
        (12, "topic = \"site/{nope}\""),
    ]);
    assert_eq!(exit_code(&run), Some(2), "{}", run.output);
    for (line, key) in [
        (2, "gateway.idd"),
        (6, "mqtt.url"),
        (9, "store.on_full"),
        (12, "route[1].topic"),
    ] {
        let prefix = format!("{name}:{line}: {key}: ");
        assert!(
            run.output.lines().any(|l| l.starts_with(&prefix)),
            "missing {prefix:?}:\n{}",
            run.output
        );
    }
}

#[test]
fn check_config_of_a_missing_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("absent.toml");
    let run = run_binary(&["check-config", "--config", path(&file)], WAIT);
    assert_eq!(exit_code(&run), Some(2), "{}", run.output);
    assert!(run.output.contains(path(&file)), "{}", run.output);
}

#[test]
fn status_reports_a_running_daemon_and_fails_without_one() {
    let broker = Broker::start();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let mut config =
        DaemonConfig::new(free_udp_port(), broker.port()).route(RouteConfig::new("s/{d}", "t/{d}"));
    config.status_topic = Some(String::new());
    config.admin_port = Some(admin.port());
    let mut daemon = Daemon::start_config(&config);
    let admin_arg = admin.to_string();
    // Healthy once the uplink is up.
    let healthy = support::try_wait_until(WAIT, || {
        exit_code(&run_binary(&["status", "--admin", &admin_arg], WAIT)) == Some(0)
    });
    assert!(healthy.is_ok(), "never healthy; log:\n{}", daemon.log());
    let by_config = run_binary(&["status", "--config", path(daemon.config_path())], WAIT);
    let by_addr = run_binary(&["status", "--admin", &admin_arg], WAIT);
    for run in [&by_config, &by_addr] {
        assert_eq!(exit_code(run), Some(0), "{}", run.output);
        assert!(run.output.contains("queue"), "{}", run.output);
    }

    daemon.terminate(WAIT);
    let gone = run_binary(&["status", "--admin", &admin_arg], WAIT);
    assert_eq!(exit_code(&gone), Some(2), "{}", gone.output);
}

#[test]
fn check_config_of_a_file_that_is_not_toml_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.toml");
    std::fs::write(&garbage, "[coap\nlisten = ").expect("write");
    let run = run_binary(&["check-config", "--config", path(&garbage)], WAIT);
    assert_eq!(exit_code(&run), Some(2), "{}", run.output);
    assert!(
        run.output.contains(&format!("{}:1", path(&garbage))),
        "{}",
        run.output
    );
}

/// The output's lines; each error must be one of them, whole.
fn lines(run: &RunOutcome) -> Vec<&str> {
    run.output.lines().collect()
}

#[test]
fn status_without_a_config_says_to_give_config_or_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("etc/coap2mqtt.toml");
    let run = run_binary(&["status", "--config", path(&file)], WAIT);
    assert_eq!(exit_code(&run), Some(2), "{}", run.output);
    let lines = lines(&run);
    assert_eq!(
        lines.first().copied(),
        Some(&*format!(
            "{}: cannot read: No such file or directory (os error 2)",
            path(&file)
        )),
        "{}",
        run.output
    );
    let hint = lines.get(1).copied().unwrap_or_default();
    assert!(
        hint.starts_with("  ") && hint.contains("--config FILE") && hint.contains("--admin"),
        "{}",
        run.output
    );
}

#[test]
fn status_without_a_daemon_names_the_address_and_what_to_do() {
    let admin = format!("127.0.0.1:{}", free_tcp_port());
    let run = run_binary(&["status", "--admin", &admin], WAIT);
    assert_eq!(exit_code(&run), Some(2), "{}", run.output);
    let lines = lines(&run);
    let first = lines.first().copied().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "cannot reach the daemon's admin endpoint at {admin}: "
        )),
        "{}",
        run.output
    );
    let hint = lines.get(1).copied().unwrap_or_default();
    for what in [
        "given with --admin",
        "systemctl status coap2mqtt",
        "--config FILE",
    ] {
        assert!(hint.contains(what), "no {what:?} in:\n{}", run.output);
    }
}

#[test]
fn run_without_its_config_says_to_give_one_with_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("absent.toml");
    let run = run_binary(&["run", "--config", path(&file)], WAIT);
    assert_eq!(exit_code(&run), Some(2), "{}", run.output);
    let lines = lines(&run);
    assert!(lines[0].starts_with(path(&file)), "{}", run.output);
    assert!(
        lines.get(1).is_some_and(|l| l.contains("--config FILE")),
        "{}",
        run.output
    );
}

#[test]
fn run_refuses_a_broken_config_with_exit_2_and_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nkeep_alive_s = 0\n",
    )
    .expect("write");
    let run = run_binary(&["run", "--config", path(&bad)], WAIT);
    assert_eq!(exit_code(&run), Some(2), "{}", run.output);
    assert!(
        run.output
            .contains(&format!("{}:3: mqtt.keep_alive_s", path(&bad))),
        "{}",
        run.output
    );
    let check = format!("coap2mqtt check-config --config {}", path(&bad));
    assert!(
        run.output
            .lines()
            .last()
            .is_some_and(|l| l.ends_with(&check)),
        "{}",
        run.output
    );
}
