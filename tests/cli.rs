//! The command line as users and packaging scripts rely on it: exit codes
//! and messages of `check-config`, `--version`, and `status` against a
//! running daemon.

mod support;

use std::time::Duration;

use support::broker::Broker;
use support::daemon::{run_binary, Daemon};
use support::{free_tcp_port, free_udp_port};

const QUICK: Duration = Duration::from_secs(30);

fn exit_code(outcome: &support::RunOutcome) -> i32 {
    outcome
        .status
        .and_then(|s| s.code())
        .unwrap_or_else(|| panic!("no exit code: {}", outcome.output))
}

#[test]
fn version_prints_the_package_version() {
    let outcome = run_binary(&["--version"], QUICK);
    assert_eq!(exit_code(&outcome), 0);
    assert_eq!(
        outcome.output.trim(),
        format!("coap2mqtt {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/coap2mqtt.toml");
    let outcome = run_binary(&["check-config", "--config", example], QUICK);
    assert_eq!(exit_code(&outcome), 0, "{}", outcome.output);
}

#[test]
fn check_config_names_file_line_and_key_of_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(
        &path,
        r#"[gateway]
id = "gw"
[coap]
listen = ["127.0.0.1:5683"]
bogus_key = 1
[mqtt]
url = "http://broker:1883"
[store]
on_full = "sometimes"
[[route]]
resource = "sensors/{device}"
topic = "site/{devce}"
"#,
    )
    .expect("write");
    let file = path.display().to_string();
    let outcome = run_binary(&["check-config", "--config", &file], QUICK);
    assert_eq!(exit_code(&outcome), 2, "{}", outcome.output);
    for expected in [
        format!("{file}:5: coap.bogus_key: unknown key"),
        format!("{file}:7: mqtt.url: unsupported scheme"),
        format!("{file}:9: store.on_full: unknown value \"sometimes\""),
        format!("{file}:12: route[1].topic: unknown variable {{devce}}"),
    ] {
        assert!(
            outcome.output.contains(&expected),
            "missing {expected:?} in:\n{}",
            outcome.output
        );
    }
}

#[test]
fn check_config_of_a_missing_or_non_toml_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent.toml").display().to_string();
    let outcome = run_binary(&["check-config", "--config", &missing], QUICK);
    assert_eq!(exit_code(&outcome), 2);
    assert!(outcome.output.contains(&missing), "{}", outcome.output);

    let garbage = dir.path().join("garbage.toml");
    std::fs::write(&garbage, "[coap\nlisten = ").expect("write");
    let garbage = garbage.display().to_string();
    let outcome = run_binary(&["check-config", "--config", &garbage], QUICK);
    assert_eq!(exit_code(&outcome), 2);
    assert!(
        outcome.output.contains(&format!("{garbage}:1")),
        "{}",
        outcome.output
    );
}

#[test]
fn run_refuses_a_broken_config_with_exit_2_and_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nkeep_alive_s = 0\n",
    )
    .expect("write");
    let file = path.display().to_string();
    let outcome = run_binary(&["run", "--config", &file], QUICK);
    assert_eq!(exit_code(&outcome), 2, "{}", outcome.output);
    assert!(
        outcome
            .output
            .contains(&format!("{file}:3: mqtt.keep_alive_s")),
        "{}",
        outcome.output
    );
}

#[test]
fn status_reports_a_running_daemon_and_exits_2_when_none_answers() {
    let broker = Broker::start();
    let admin = free_tcp_port();
    let daemon = Daemon::start(&format!(
        r#"
[coap]
listen = ["127.0.0.1:{coap}"]
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
[store]
path = "@STORE@"
[admin]
listen = "127.0.0.1:{admin}"
[[route]]
resource = "s/{{d}}"
topic = "t/{{d}}"
"#,
        coap = free_udp_port(),
        mqtt = broker.port(),
    ));
    let config = daemon.config_path().display().to_string();
    let mut outcome = run_binary(&["status", "--config", &config], QUICK);
    // Healthy once the uplink is connected.
    for _ in 0..50 {
        if exit_code(&outcome) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        outcome = run_binary(&["status", "--config", &config], QUICK);
    }
    assert_eq!(exit_code(&outcome), 0, "{}", outcome.output);
    assert!(outcome.output.contains("queue"), "{}", outcome.output);
    assert!(outcome.output.contains("uplink"), "{}", outcome.output);
    drop(daemon);

    let nobody = format!("127.0.0.1:{}", free_tcp_port());
    let outcome = run_binary(&["status", "--admin", &nobody], QUICK);
    assert_eq!(exit_code(&outcome), 2, "{}", outcome.output);
}
