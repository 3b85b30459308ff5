//! The device table seen from outside: devices posting with libcoap's
//! client to a real daemon, then `GET /devices`, `coap2mqtt devices` (the
//! real CLI) and the aggregates on /metrics.

mod support;

use std::time::Duration;

use support::coap_cli::{assert_code, post_notls};
use support::daemon::{admin_get, run_binary, Daemon, DaemonConfig, RouteConfig};
use support::{free_tcp_port, free_udp_port};

fn metric(exposition: &str, sample: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

#[test]
fn devices_are_listed_by_name_with_what_they_stored_and_what_was_refused() {
    let coap = free_udp_port();
    let admin = free_tcp_port();
    // No broker: the messages stay queued, which is all this test needs.
    let mut config = DaemonConfig::new(coap, free_tcp_port())
        .route(RouteConfig::new("s/{device}", "t/{device}"));
    config.admin_port = Some(admin);
    let _daemon = Daemon::start_config(&config);

    // Each coap-client run has a port of its own: the name comes from the
    // route's {device}, not from the address.
    for reading in ["20.5", "21.0", "21.5"] {
        assert_code(&post_notls(coap, "s/kitchen", reading, &[]), "2.04");
    }
    assert_code(&post_notls(coap, "s/garage", "7", &[]), "2.04");
    assert_code(&post_notls(coap, "nowhere", "x", &[]), "4.04");

    let (status, body) = admin_get(admin, "/devices");
    assert_eq!(status, 200, "{body}");
    let listing: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let devices = listing["devices"].as_array().expect("a list");
    let find = |name: &str| {
        devices
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not listed: {body}"))
    };
    assert_eq!(find("kitchen")["messages_stored"], 3, "{body}");
    assert_eq!(find("kitchen")["bytes_stored"], 12, "{body}");
    assert_eq!(find("garage")["messages_stored"], 1, "{body}");
    // The request no route took is listed under its address.
    let unrouted: Vec<_> = devices
        .iter()
        .filter(|d| d["refusals"]["4.04"] == 1)
        .collect();
    assert_eq!(unrouted.len(), 1, "{body}");
    assert!(
        unrouted[0]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("127.0.0.1:")),
        "{body}"
    );
    assert_eq!(devices.len(), 3, "{body}");
    assert_eq!(listing["capacity"], 10_000);

    let admin_addr = format!("127.0.0.1:{admin}");
    let table = run_binary(
        &["devices", "--admin", &admin_addr],
        Duration::from_secs(30),
    );
    assert!(table.success(), "{table:?}");
    let kitchen = table
        .output
        .lines()
        .find(|l| l.starts_with("kitchen "))
        .unwrap_or_else(|| panic!("no kitchen line: {table:?}"))
        .to_string();
    assert!(kitchen.contains("127.0.0.1:"), "{kitchen}");
    assert!(kitchen.split_whitespace().any(|w| w == "3"), "{kitchen}");

    // Nobody has been quiet for an hour yet.
    let quiet = run_binary(
        &[
            "devices",
            "--admin",
            &admin_addr,
            "--quiet-for",
            "1h",
            "--json",
        ],
        Duration::from_secs(30),
    );
    assert!(quiet.success(), "{quiet:?}");
    let quiet: serde_json::Value = serde_json::from_str(&quiet.output).expect("JSON");
    assert_eq!(
        quiet["devices"].as_array().map(Vec::len),
        Some(0),
        "{quiet}"
    );

    // Only aggregates on /metrics.
    let (_, exposition) = admin_get(admin, "/metrics");
    assert_eq!(metric(&exposition, "coap2mqtt_devices_known "), Some(3.0));
    assert_eq!(
        metric(&exposition, "coap2mqtt_devices_heard{window=\"5m\"} "),
        Some(3.0),
        "{exposition}"
    );
    assert!(!exposition.contains("kitchen"), "per-device labels leaked");
}

#[test]
fn a_full_table_keeps_the_most_recent_devices_and_counts_the_rest() {
    let coap = free_udp_port();
    let admin = free_tcp_port();
    let mut config = DaemonConfig::new(coap, free_tcp_port())
        .route(RouteConfig::new("s/{device}", "t/{device}"));
    config.admin_port = Some(admin);
    let config = config.render().replace(
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\""),
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\nmax_devices = 2"),
    );
    assert!(config.contains("max_devices = 2"), "{config}");
    let _daemon = Daemon::start(&config);
    for device in ["a", "b", "c"] {
        assert_code(&post_notls(coap, &format!("s/{device}"), "1", &[]), "2.04");
    }
    let (_, body) = admin_get(admin, "/devices");
    let listing: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let names: Vec<&str> = listing["devices"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["c", "b"], "{body}");
    assert_eq!(listing["evicted"], 1, "{body}");
}
