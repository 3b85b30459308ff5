//! Plain CoAP is unauthenticated, so the gateway serves it on loopback
//! unless told otherwise, says so at start, and warns when a route takes it
//! from the network. (The decision itself: config/exposure.rs.)

mod support;

use std::net::SocketAddr;

use support::daemon::{run_binary, Daemon, DaemonConfig, RouteConfig};
use support::{free_udp_port, WAIT};

fn write_config(dir: &std::path::Path, listen: &str, route: &str) -> std::path::PathBuf {
    let file = dir.join("gw.toml");
    let text = format!(
        "[coap]\nlisten = [{listen}]\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\
         [store]\npath = \"{}\"\n[[route]]\nresource = \"s/{{device}}\"\n{route}\n",
        dir.join("queue").display()
    );
    std::fs::write(&file, text).expect("write the config");
    file
}

#[test]
fn the_daemon_says_at_start_that_plain_coap_is_loopback_only_and_how_to_open_it() {
    let port = free_udp_port();
    let mut config = DaemonConfig::new(port, 1).route(RouteConfig::new("s/{d}", "t/{d}"));
    config.coap_listen = vec![
        SocketAddr::from(([127, 0, 0, 1], port)),
        format!("[::1]:{port}").parse().expect("address"),
    ];
    let daemon = Daemon::start_config(&config);
    let expected = format!(
        "plain CoAP (no encryption, no authentication) is served on loopback only \
         (127.0.0.1:{port}, [::1]:{port})"
    );
    daemon.wait_for_log(&expected, WAIT);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains(&expected))
        .expect("the line waited for");
    assert!(line.contains(" INFO "), "{line}");
    let how = format!(
        "add an address such as \"0.0.0.0:5683\" to coap.listen in {}",
        daemon.config_path().display()
    );
    assert!(line.contains(&how), "{line}");
    assert!(!log.contains("open to the network"), "{log}");
}

#[test]
fn check_config_warns_when_a_route_takes_plain_coap_from_the_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(
        dir.path(),
        "\"127.0.0.1:5683\", \"0.0.0.0:5683\"",
        "topic = \"t/{device}\"",
    );
    let run = run_binary(
        &["check-config", "--config", file.to_str().expect("utf-8")],
        WAIT,
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(0), "{}", run.output);
    let warning = run
        .output
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning in:\n{}", run.output));
    assert!(
        warning.contains("open to the network on 0.0.0.0:5683"),
        "{warning}"
    );
    assert!(warning.contains("taken by route[1]"), "{warning}");
    assert!(
        warning.contains(&format!("In {}", file.display())),
        "{warning}"
    );
}

#[test]
fn check_config_is_quiet_when_every_route_needs_a_dtls_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(
        dir.path(),
        "\"0.0.0.0:5683\"",
        "topic = \"t/{device}\"\nidentity = \"{device}\"",
    );
    let run = run_binary(
        &["check-config", "--config", file.to_str().expect("utf-8")],
        WAIT,
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(0), "{}", run.output);
    assert!(!run.output.contains("warning"), "{}", run.output);
}
