//! The monitoring the package ships (docs/monitoring/): the alert rules pass
//! `promtool check rules` and their own `promtool test rules`, the Grafana
//! dashboard is a dashboard over a data source variable, and every metric
//! either of them names is one a real daemon exposes on /metrics, which is
//! OpenMetrics text as an independent parser reads it.
//!
//! promtool comes from Debian's `prometheus`, the parser from
//! `python3-prometheus-client`; scripts/test installs both.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::daemon::{Daemon, DaemonConfig, RouteConfig};
use support::{free_tcp_port, free_udp_port};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Runs a tool to completion: (success, stdout and stderr).
fn run(program: &str, args: &[&str], install: &str) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): apt-get install {install} (scripts/test does)")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Every `coap2mqtt_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("coap2mqtt_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The dashboard's PromQL expressions.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("docs/monitoring/grafana-dashboard.json"))
        .expect("the dashboard is JSON")
}

/// A daemon's /metrics: (Content-Type, body).
fn scrape() -> (String, String) {
    let admin = free_tcp_port();
    let mut config =
        DaemonConfig::new(free_udp_port(), 1).route(RouteConfig::new("s/{d}", "t/{d}"));
    config.admin_port = Some(admin);
    let daemon = Daemon::start_config(&config);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", admin)).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    drop(daemon);
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (content_type, body.to_string())
}

/// The sample names an OpenMetrics exposition can have, from its `# TYPE`
/// lines (a family without samples yet still counts: its samples come with
/// traffic).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let Some((family, kind)) = rest.split_once(' ') else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_own_tests() {
    let (ok, out) = run(
        "promtool",
        &["check", "rules", "docs/monitoring/alerts.yml"],
        "prometheus",
    );
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run(
        "promtool",
        &["test", "rules", "tests/monitoring/alerts.test.yml"],
        "prometheus",
    );
    assert!(ok, "promtool test rules:\n{out}");
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_name_is_exposed_by_a_real_daemon() {
    let (content_type, body) = scrape();
    assert_eq!(
        content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let exposed = exposed_names(&body);
    assert!(exposed.contains("coap2mqtt_queue_appended_total"), "{body}");
    assert!(!exposed.contains("coap2mqtt_no_such_metric"));

    let alerts = read("docs/monitoring/alerts.yml");
    let dashboard = dashboard_exprs(&dashboard()).join("\n");
    for (file, text) in [
        ("docs/monitoring/alerts.yml", &alerts),
        ("docs/monitoring/grafana-dashboard.json", &dashboard),
    ] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{file} names no metric");
        let unknown: Vec<&String> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the daemon does not expose: {unknown:?}\nexposed: {exposed:?}"
        );
    }
}

#[test]
fn the_exposition_passes_an_independent_openmetrics_parser() {
    let (_, body) = scrape();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &body).expect("write");
    // Debian's python3 (its prometheus_client), whatever python3 is first
    // on PATH.
    let program = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        families = list(parse(open(sys.argv[1]).read()))\n\
        print(len(families), 'families')";
    let (ok, out) = run(
        "/usr/bin/python3",
        &["-c", program, file.to_str().expect("utf-8")],
        "python3-prometheus-client",
    );
    assert!(
        ok,
        "the OpenMetrics parser refused /metrics:\n{out}\n{body}"
    );
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_over_a_datasource_variable() {
    let d = dashboard();
    for key in ["uid", "title"] {
        assert!(d[key].as_str().is_some_and(|s| !s.is_empty()), "no {key}");
    }
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let variables = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "no Prometheus data source variable: {variables:?}"
    );
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    assert!(!panels.is_empty(), "no panels");
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].as_u64().expect("a panel id")),
            "{title}: id taken twice"
        );
        assert!(p["type"].as_str().is_some(), "{title}: no type");
        for key in ["x", "y", "w", "h"] {
            assert!(
                p["gridPos"][key].as_u64().is_some(),
                "{title}: no gridPos.{key}"
            );
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in &targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: {t}"
            );
            assert!(
                t["refId"].as_str().is_some(),
                "{title}: a target without refId"
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
}

#[test]
fn the_dashboard_and_the_alerts_cover_what_an_operator_watches() {
    let used = metric_names(&dashboard_exprs(&dashboard()).join("\n"));
    for watched in [
        "coap2mqtt_queue_messages",              // queue depth
        "coap2mqtt_queue_oldest_age_seconds",    // queue age
        "coap2mqtt_queue_appended_total",        // in
        "coap2mqtt_mqtt_acked_total",            // out
        "coap2mqtt_coap_refused_total",          // refusals by reason
        "coap2mqtt_mqtt_connected",              // uplink state
        "coap2mqtt_dtls_handshakes_total",       // handshakes by outcome
        "coap2mqtt_store_commit_seconds_bucket", // commit latency
    ] {
        assert!(
            used.contains(watched),
            "the dashboard does not show {watched}"
        );
    }
    let alerts = read("docs/monitoring/alerts.yml");
    for alert in [
        "Coap2mqttUplinkDown",
        "Coap2mqttQueueOld",
        "Coap2mqttStoreUnhealthy",
        "Coap2mqttDeadLettersGrowing",
        "Coap2mqttHandshakeFailures",
    ] {
        assert!(alerts.contains(&format!("alert: {alert}\n")), "no {alert}");
    }
}
