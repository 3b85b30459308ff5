//! SIGHUP reloads routes and the log level, says which other changes wait
//! for a restart (and does not apply them); a broken config is refused and
//! the old one stays.

mod support;

use support::broker::Broker;
use support::coap_cli::post_notls;
use support::daemon::{Daemon, DaemonConfig, RouteConfig};
use support::subscriber::Subscriber;
use support::{free_udp_port, WAIT};

fn hangup(daemon: &Daemon) {
    let pid = daemon.pid().expect("daemon running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP {pid} failed");
}

#[test]
fn sighup_applies_a_new_route_and_refuses_a_broken_config() {
    let broker = Broker::start();
    // Only the routed topics: the daemon's retained status would race them.
    let subscriber = Subscriber::start(broker.port(), "tb/#");
    let port = free_udp_port();
    let before = DaemonConfig::new(port, broker.port()).route(RouteConfig::new("a/{d}", "ta/{d}"));
    let daemon = Daemon::start_config(&before);

    assert_eq!(post_notls(port, "b/x", "1", &[]).expect_code(), "4.04");

    let after = before.clone().route(RouteConfig::new("b/{d}", "tb/{d}"));
    let text = after.render().replace(
        support::daemon::STORE_PLACEHOLDER,
        &daemon.store_path().display().to_string(),
    );
    std::fs::write(daemon.config_path(), text).expect("rewrite config");
    hangup(&daemon);
    daemon.wait_for_log("reload: applied [[route]]: 2 routes in force", WAIT);

    assert_eq!(post_notls(port, "b/x", "2", &[]).expect_code(), "2.04");
    let got = subscriber.wait_for_count(1, WAIT);
    assert!(
        got.iter().any(|m| m.topic == "tb/x" && m.payload == b"2"),
        "{got:?}"
    );

    let mut broken = std::fs::read_to_string(daemon.config_path()).expect("read config");
    broken = broken.replace("tb/{d}", "tb/{devce}");
    std::fs::write(daemon.config_path(), broken).expect("break config");
    hangup(&daemon);
    daemon.wait_for_log("the new config is refused", WAIT);
    assert!(
        daemon.log().contains("unknown variable {devce}"),
        "{}",
        daemon.log()
    );

    assert_eq!(post_notls(port, "b/y", "3", &[]).expect_code(), "2.04");
    let got = subscriber.wait_for_count(2, WAIT);
    assert!(
        got.iter().any(|m| m.topic == "tb/y" && m.payload == b"3"),
        "{got:?}"
    );
}

#[test]
fn sighup_applies_the_log_level_and_says_an_admin_change_needs_a_restart() {
    let port = free_udp_port();
    let config = DaemonConfig::new(port, support::free_tcp_port())
        .route(RouteConfig::new("a/{d}", "ta/{d}"));
    let with = |extra: &str| format!("{}\n{extra}\n", config.render());
    let mut daemon = Daemon::start(&with("[log]\nlevel = \"info\""));
    daemon.restart_without_rust_log();
    assert_eq!(post_notls(port, "a/x", "1", &[]).expect_code(), "2.04");
    assert!(
        !daemon.log().contains("request from"),
        "no debug line at level info"
    );

    let store = daemon.store_path().display().to_string();
    let mut admin_moved = config.clone();
    admin_moved.admin_port = Some(1);
    let edited = format!("{}\n[log]\nlevel = \"debug\"\n", admin_moved.render())
        .replace(support::daemon::STORE_PLACEHOLDER, &store)
        .replace(
            support::daemon::ADMIN_SOCKET_PLACEHOLDER,
            &daemon.admin_socket().display().to_string(),
        );
    std::fs::write(daemon.config_path(), edited).expect("rewrite config");
    hangup(&daemon);
    daemon.wait_for_log("reload: applied [log] level = DEBUG", WAIT);
    daemon.wait_for_log("changes to [admin] are NOT applied", WAIT);
    assert_eq!(post_notls(port, "a/y", "2", &[]).expect_code(), "2.04");
    daemon.wait_for_log("request from", WAIT);
}
