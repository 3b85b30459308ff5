//! `coap2mqtt dead-letters` against a real daemon and a real mosquitto: a
//! message the broker refuses (an ACL, MQTT 5 PUBACK 0x87) becomes a dead
//! letter; the real CLI lists and shows it over the admin socket, requeues
//! it once the broker takes it (a subscriber receives it), purges another,
//! and refuses an unknown id by name. Every change is logged with who asked.
//! A user outside root and the group cannot reach the socket at all.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use support::broker::{Broker, BrokerOptions};
use support::coap_client::CoapClient;
use support::daemon::{admin_get, Daemon, DaemonConfig, RouteConfig, BINARY};
use support::subscriber::Subscriber;
use support::{free_tcp_port, free_udp_port, wait_until, WAIT};

/// Anonymous clients may write under t/ok/ only; `open` lets t/denied/ in.
fn acl(open: bool) -> String {
    let denied = if open {
        "topic readwrite t/denied/#\n"
    } else {
        ""
    };
    format!(
        "topic readwrite coap2mqtt/#\ntopic readwrite t/ok/#\n{denied}topic read t/#\n\
         topic readwrite coap2mqtt-test/#\n"
    )
}

/// Runs `coap2mqtt dead-letters ARGS --socket SOCKET` to completion.
fn cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("dead-letters")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("run coap2mqtt dead-letters")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn dead_letter_count(admin: u16) -> String {
    let metrics = admin_get(admin, "/metrics").1;
    metrics
        .lines()
        .find(|l| l.starts_with("coap2mqtt_queue_dead_letters "))
        .unwrap_or("")
        .to_string()
}

#[test]
fn an_operator_lists_shows_requeues_and_purges_dead_letters_with_the_cli() {
    let mut broker = Broker::start_with(BrokerOptions {
        extra_config: "acl_file @DIR@/acl\n".into(),
        files: vec![("acl".into(), acl(false))],
        ..BrokerOptions::default()
    });
    let admin = free_tcp_port();
    let mut config = DaemonConfig::new(free_udp_port(), broker.port())
        .route(RouteConfig::new("s/{area}/{d}", "t/{area}/{d}"));
    config.admin_port = Some(admin);
    config.mqtt_extra.insert("reconnect_max_s".into(), 1.into());
    let daemon = Daemon::start_config(&config);
    let socket = daemon.admin_socket();
    let mut device = CoapClient::new(daemon.coap_addr());
    assert!(device
        .con(&["s", "denied", "text"], b"21.5 degrees")
        .is_success());
    assert!(device
        .con(&["s", "denied", "bin"], &[0xff, 0x00])
        .is_success());
    wait_until(WAIT, "two dead letters", || {
        dead_letter_count(admin) == "coap2mqtt_queue_dead_letters 2"
    });

    // list: both, with topic, size and why; --json gives their ids.
    let list = cli(&socket, &["list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let text = stdout(&list);
    assert!(
        text.contains("t/denied/text") && text.contains("t/denied/bin"),
        "{text}"
    );
    assert!(
        text.contains("not_authorized"),
        "the reason is shown:\n{text}"
    );
    let listed: serde_json::Value =
        serde_json::from_slice(&cli(&socket, &["list", "--json"]).stdout).expect("JSON list");
    let letters = listed.as_array().expect("an array");
    let id_of = |topic: &str| {
        letters
            .iter()
            .find(|l| l["topic"] == topic)
            .and_then(|l| l["id"].as_u64())
            .unwrap_or_else(|| panic!("no {topic} in {listed}"))
    };
    let (text_id, bin_id) = (id_of("t/denied/text"), id_of("t/denied/bin"));
    assert_eq!(letters.len(), 2);
    assert!(letters
        .iter()
        .all(|l| l["dead_at"].as_str().is_some_and(|t| t.ends_with('Z'))));

    // show: the payload as text when UTF-8, else base64.
    let shown = cli(&socket, &["show", &text_id.to_string()]);
    assert!(
        stdout(&shown).contains("21.5 degrees"),
        "{}",
        stdout(&shown)
    );
    let bin: serde_json::Value =
        serde_json::from_slice(&cli(&socket, &["show", &bin_id.to_string(), "--json"]).stdout)
            .expect("JSON letter");
    assert_eq!(bin["payload_base64"], "/wA=");
    assert_eq!(bin["size"], 2);

    // An unknown id is named, exit 1, and nothing changes.
    let unknown = cli(&socket, &["requeue", &text_id.to_string(), "999999"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("999999"), "{}", stderr(&unknown));
    let unknown_show = cli(&socket, &["show", "999999"]);
    assert_eq!(unknown_show.status.code(), Some(1));
    assert!(stderr(&unknown_show).contains("999999"));
    assert_eq!(dead_letter_count(admin), "coap2mqtt_queue_dead_letters 2");

    // The broker takes t/denied/ now: a requeued letter reaches a subscriber.
    broker.stop();
    std::fs::write(broker.dir().join("acl"), acl(true)).expect("open the ACL");
    broker.start_again();
    let subscriber = Subscriber::start_v5(broker.port(), "t/#");
    let requeued = cli(&socket, &["requeue", &text_id.to_string()]);
    assert!(requeued.status.success(), "{}", stderr(&requeued));
    assert!(
        stdout(&requeued).contains("requeued"),
        "{}",
        stdout(&requeued)
    );
    let got = subscriber.wait_for_count(1, WAIT);
    assert_eq!(got[0].topic, "t/denied/text");
    assert_eq!(got[0].payload, b"21.5 degrees");
    let left: serde_json::Value =
        serde_json::from_slice(&cli(&socket, &["list", "--json"]).stdout).expect("JSON");
    let left_ids: Vec<u64> = left
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|l| l["id"].as_u64())
        .collect();
    assert_eq!(left_ids, [bin_id]);

    // purge: gone, durably counted, never published.
    let purged = cli(&socket, &["purge", &bin_id.to_string()]);
    assert!(purged.status.success(), "{}", stderr(&purged));
    assert!(stdout(&cli(&socket, &["list"])).contains("no dead letters"));
    wait_until(WAIT, "no dead letters", || {
        dead_letter_count(admin) == "coap2mqtt_queue_dead_letters 0"
    });
    assert_eq!(
        subscriber.count(),
        1,
        "the purged message was not published"
    );

    // Each change is logged with the kernel's word on who asked.
    let me = std::process::id();
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("asked by pid")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("requeue") && l.contains(&format!("dead letters {text_id}"))),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("purge") && l.contains(&format!("dead letters {bin_id}"))),
        "{lines:#?}"
    );
    let uid = String::from_utf8_lossy(&Command::new("id").arg("-u").output().expect("id").stdout)
        .trim()
        .to_string();
    assert!(
        lines.iter().all(|l| l.contains(&format!("uid {uid} "))),
        "{lines:#?} (test pid {me})"
    );
}

/// Needs root (it switches to the user nobody with setpriv); scripts/test
/// leaves it out otherwise.
#[test]
fn a_user_outside_root_and_the_group_cannot_reach_the_admin_socket() {
    let broker = Broker::start();
    let run = tempfile::tempdir().expect("tempdir");
    // Others may pass through the temp dir: only the daemon's modes decide.
    std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = run.path().join("coap2mqtt").join("admin.sock");
    let config = DaemonConfig::new(free_udp_port(), broker.port())
        .route(RouteConfig::new("s/{d}", "t/{d}"))
        .render()
        .replace(
            support::daemon::ADMIN_SOCKET_PLACEHOLDER,
            &socket.display().to_string(),
        );
    let daemon = Daemon::start(&config);
    wait_until(WAIT, "the socket", || socket.exists());
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(socket.parent().expect("dir")), 0o750);
    assert_eq!(mode(&socket), 0o660);

    // root may.
    assert!(cli(&socket, &["list"]).status.success());
    // nobody may not: refused by the kernel, told what to do, exit 2.
    let refused = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            BINARY,
        ])
        .args(["dead-letters", "purge", "--all", "--socket"])
        .arg(&socket)
        .output()
        .expect("run setpriv");
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("Permission denied"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("group coap2mqtt"),
        "{}",
        stderr(&refused)
    );
    assert!(!daemon.log().contains("asked by"), "no change was asked");
}
