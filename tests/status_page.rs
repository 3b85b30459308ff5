//! The status page (`GET /` on the admin endpoint) in a real browser:
//! headless chromium loads it from a real daemon, runs its JavaScript
//! (fetch of /status.json and /devices), and the DOM it rendered must hold
//! the figures the daemon really has: the queue's depth, the dead letters
//! and their topic, the uplink's state. The page's static HTML holds none of
//! them, so this fails if the script did not run.

mod support;

use std::time::Duration;
use support::broker::{Broker, BrokerOptions};
use support::chromium;
use support::coap_cli::post_notls;
use support::daemon::{admin_get, Daemon, DaemonConfig, RouteConfig};
use support::{free_tcp_port, free_udp_port, wait_until, WAIT};

/// The page's scripts run this long (virtual time): the first render and
/// a refresh.
const BUDGET: Duration = Duration::from_secs(5);

fn status_json(admin: u16) -> serde_json::Value {
    let (code, body) = admin_get(admin, "/status.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status.json: {e}\n{body}"))
}

/// The text inside the element with `id` in `dom` (its first text run).
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the DOM:\n{dom}"));
    let after = &dom[start..];
    let open = after.find('>').expect("tag end") + 1;
    let close = after[open..].find('<').expect("text end");
    after[open..open + close].to_string()
}

#[test]
fn the_status_page_renders_the_daemons_real_figures_in_a_browser() {
    // The broker refuses t/denied/ (MQTT 5 PUBACK 0x87): a dead letter.
    let mut broker = Broker::start_with(BrokerOptions {
        extra_config: "acl_file @DIR@/acl\n".into(),
        files: vec![(
            "acl".into(),
            "topic readwrite t/ok/#\ntopic read t/#\ntopic readwrite coap2mqtt-test/#\n\
             topic readwrite coap2mqtt/#\n"
                .into(),
        )],
        ..BrokerOptions::default()
    });
    let admin = free_tcp_port();
    let coap = free_udp_port();
    let mut config = DaemonConfig::new(coap, broker.port())
        .route(RouteConfig::new("s/{area}/{device}", "t/{area}/{device}"));
    config.admin_port = Some(admin);
    let daemon = Daemon::start_config(&config);
    for (path, payload) in [("s/ok/a", "1"), ("s/denied/<i>x", "2"), ("s/ok/c", "3")] {
        assert_eq!(post_notls(coap, path, payload, &[]).expect_code(), "2.04");
    }
    wait_until(WAIT, "one dead letter, two acked", || {
        let s = status_json(admin);
        s["dead_letters"]["count"] == 1 && s["uplink"]["acked"] == 2
    });
    // The broker goes away: what comes now stays queued.
    broker.stop();
    for i in 0..3 {
        let path = format!("s/ok/queued{i}");
        assert_eq!(post_notls(coap, &path, "q", &[]).expect_code(), "2.04");
    }
    wait_until(WAIT, "three queued, uplink down", || {
        let s = status_json(admin);
        s["queue"]["messages"] == 3 && s["uplink"]["state"] == "disconnected"
    });
    let truth = status_json(admin);

    let scratch = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{admin}/");
    let dom = chromium::dump_dom(&url, BUDGET, scratch.path());
    assert!(
        dom.contains("data-rendered=\"yes\""),
        "the page's script did not render:\n{dom}"
    );
    assert_eq!(
        text_of(&dom, "queue-depth"),
        truth["queue"]["messages"].to_string()
    );
    assert_eq!(text_of(&dom, "queue-depth"), "3");
    assert_eq!(text_of(&dom, "dead-count"), "1");
    assert_eq!(text_of(&dom, "uplink-state"), "disconnected");
    assert_eq!(
        text_of(&dom, "total-in"),
        truth["queue"]["stored"].to_string()
    );
    let health = text_of(&dom, "health");
    assert!(health == "healthy" || health == "UNHEALTHY", "{health}");
    assert_eq!(text_of(&dom, "version"), env!("CARGO_PKG_VERSION"));
    // The dead letter's topic is text, never markup, in the table.
    assert!(
        dom.contains("t/denied/&lt;i&gt;x"),
        "the dead letter's topic, escaped:\n{dom}"
    );
    // The device table: six devices; the busiest and quietest lists hold
    // names as text (one is "<i>x"), never markup.
    assert_eq!(
        text_of(&dom, "devices-known"),
        "6 device(s) in the table (at most 10000)"
    );
    assert!(dom.contains("id=\"devices-busiest\""), "{dom}");
    assert!(
        dom.contains("<td>&lt;i&gt;x</td>"),
        "a device's name, escaped:\n{dom}"
    );
    assert!(dom.contains("<td>queued2</td>"), "{dom}");

    let png = scratch.path().join("status-page.png");
    chromium::screenshot(&url, BUDGET, &png, 1200, 900, scratch.path());
    let bytes = std::fs::read(&png).expect("read the screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    if let Some(keep) = std::env::var_os("STATUS_PAGE_SCREENSHOT") {
        std::fs::copy(&png, keep).expect("keep the screenshot");
    }
    drop(daemon);
}

#[test]
fn the_status_page_loads_nothing_from_elsewhere() {
    let broker = Broker::start();
    let admin = free_tcp_port();
    let mut config =
        DaemonConfig::new(free_udp_port(), broker.port()).route(RouteConfig::new("s/{d}", "t/{d}"));
    config.admin_port = Some(admin);
    let _daemon = Daemon::start_config(&config);
    let (code, page) = admin_get(admin, "/");
    assert_eq!(code, 200);
    assert!(
        page.contains("<script>") && page.contains("<style>"),
        "inline"
    );
    for external in ["http://", "https://", "src=", "<link", "@import", "//cdn"] {
        assert!(!page.contains(external), "the page refers to {external:?}");
    }
}
