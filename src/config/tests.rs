use super::*;
use crate::route::Refusal;

const EXAMPLE: &str = include_str!("../../config/coap2mqtt.toml");

/// A document from its lines: line N of the file is `lines[N - 1]`.
fn doc(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

/// Just enough for a valid config, around what a test is about.
fn with(extra: &[&str]) -> String {
    let mut lines = vec![
        "[gateway]",
        "id = \"gw1\"",
        "[mqtt]",
        "url = \"mqtt://broker.example\"",
        "[[route]]",
        "resource = \"a/{x}\"",
        "topic = \"t/{x}\"",
    ];
    lines.extend_from_slice(extra);
    doc(&lines)
}

/// Like [`with`], but the extra lines go into `[mqtt]`, from line 8 on.
fn in_mqtt(extra: &[&str]) -> String {
    let mut lines = vec![
        "[gateway]",
        "id = \"gw1\"",
        "[[route]]",
        "resource = \"a/{x}\"",
        "topic = \"t/{x}\"",
        "[mqtt]",
        "url = \"mqtt://broker.example\"",
    ];
    lines.extend_from_slice(extra);
    doc(&lines)
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("c.toml"))
}

fn valid(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Every problem, as the user sees it.
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected problems, the config is valid"),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

/// The only problem, as the user sees it.
fn problem(text: &str) -> String {
    let all = problems(text);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    all.into_iter().next().unwrap_or_default()
}

#[test]
fn the_example_config_is_valid_and_runs_on_a_laptop() {
    let config = valid(EXAMPLE);
    assert!(
        config.coap.listen.iter().all(|a| a.ip().is_loopback()),
        "{:?}",
        config.coap.listen
    );
    assert_eq!(
        config.mqtt.endpoints,
        vec![Endpoint {
            scheme: Scheme::Mqtt,
            host: "127.0.0.1".into(),
            port: 1883,
            path: String::new(),
        }]
    );
    assert_eq!(config.mqtt.protocol, Protocol::Auto);
    assert_eq!(config.store.path, PathBuf::from("coap2mqtt-queue"));
    assert!(config.store.path.is_relative());
    assert_eq!(config.routes.len(), 3);
    let router = config.router();
    let got = router
        .resolve(&["sensors", "d7", "temp"], Method::Post, None)
        .and_then(|r| r.topic.for_record(None));
    assert_eq!(got, Ok(format!("site/{}/d7/temp", config.gateway.id)));
}

#[test]
fn the_example_config_shows_the_defaults() {
    let example = valid(EXAMPLE);
    let defaults = valid(&doc(&[
        "[mqtt]",
        "url = \"mqtt://127.0.0.1:1883\"",
        "[[route]]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]));
    assert_eq!(example.coap, defaults.coap);
    assert_eq!(example.gateway, defaults.gateway);
    assert_eq!(example.mqtt, defaults.mqtt);
    assert_eq!(example.store, defaults.store);
    assert_eq!(example.log, defaults.log);
    assert_eq!(example.admin, defaults.admin);
}

#[test]
fn defaults_are_filled() {
    let c = valid(&with(&[]));
    // Plain CoAP is unauthenticated: by default only this machine has it.
    let loopback: Vec<std::net::SocketAddr> = ["127.0.0.1:5683", "[::1]:5683"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(c.coap.listen, loopback);
    assert_eq!(c.coap.max_payload, 65_536);
    assert_eq!(c.coap.dedup_capacity, 65_536);
    assert_eq!(c.coap.block_capacity, 256);
    assert_eq!(c.coap.block_lifetime_s, 120);
    assert_eq!(c.coap.full_retry_after_s, 30);
    assert_eq!(c.mqtt.client_id, "coap2mqtt-gw1");
    assert_eq!(c.mqtt.username, None);
    assert_eq!(c.mqtt.password_file, None);
    assert_eq!(c.mqtt.ca_file, None);
    assert!(c.mqtt.alpn.is_empty());
    assert_eq!(c.mqtt.keep_alive_s, 30);
    assert_eq!(c.mqtt.inflight, 256);
    assert_eq!(c.mqtt.status_topic.as_deref(), Some("coap2mqtt/gw1/status"));
    assert_eq!(c.mqtt.reconnect_min_ms, 500);
    assert_eq!(c.mqtt.reconnect_max_s, 30);
    assert_eq!(c.mqtt.max_packet_size, 262_144);
    assert_eq!(c.mqtt.max_attempts, 3);
    assert_eq!(c.store.path, PathBuf::from("coap2mqtt-queue"));
    assert_eq!(c.store.max_messages, 1_000_000);
    assert_eq!(c.store.max_bytes, 1 << 30);
    assert_eq!(c.store.on_full, OnFull::Reject);
    assert_eq!(c.store.cache_mb, 16);
    assert_eq!(c.store.commit_max_batch, 1024);
    assert_eq!(c.log.level, log::LevelFilter::Info);
    assert_eq!(c.source, PathBuf::from("c.toml"));
    let route = &c.routes[0];
    assert_eq!(route.methods, vec![Method::Post, Method::Put]);
    assert_eq!((route.qos, route.retain), (Qos::AtLeastOnce, false));
    assert_eq!(
        (route.identity.as_deref(), route.identities.len()),
        (None, 0)
    );
}

#[test]
fn gateway_id_defaults_to_the_host_name() {
    let c = valid(&doc(&[
        "[mqtt]",
        "url = \"mqtt://b\"",
        "[[route]]",
        "resource = \"a\"",
        "topic = \"{gateway}\"",
    ]));
    let host = hostname::get()
        .expect("host name")
        .into_string()
        .expect("UTF-8");
    assert_eq!(c.gateway.id, host);
    assert_eq!(c.mqtt.client_id, format!("coap2mqtt-{host}"));
}

#[test]
fn every_key_can_be_set() {
    let c = valid(&doc(&[
        "[gateway]",
        "id = \"hall-3\"",
        "[coap]",
        "listen = [\"127.0.0.1:5683\", \"[::1]:5683\"]",
        "max_payload = 1024",
        "dedup_capacity = 10",
        "block_capacity = 2",
        "block_lifetime_s = 5",
        "full_retry_after_s = 9",
        "[mqtt]",
        "url = \"mqtts://broker.example\"",
        "client_id = \"me\"",
        "username = \"u\"",
        "password_file = \"/run/pw\"",
        "ca_file = \"ca.pem\"",
        "client_cert = \"c.pem\"",
        "client_key = \"c.key\"",
        "alpn = [\"mqtt\"]",
        "keep_alive_s = 5",
        "inflight = 65535",
        "status_topic = \"gw/{gateway}/up\"",
        "reconnect_min_ms = 100",
        "reconnect_max_s = 60",
        "max_packet_size = 4096",
        "max_attempts = 7",
        "[store]",
        "path = \"/var/lib/coap2mqtt/queue\"",
        "max_messages = 5",
        "max_bytes = 2048",
        "on_full = \"drop-oldest\"",
        "cache_mb = 1",
        "commit_max_batch = 64",
        "[log]",
        "level = \"debug\"",
        "[[route]]",
        "resource = \"s/{device}\"",
        "topic = \"t/{identity}\"",
        "methods = [\"get\", \"iPATCH\"]",
        "qos = 0",
        "retain = true",
        "identity = \"{device}\"",
        "identities = [\"sensor-*\"]",
    ]));
    assert_eq!(c.gateway.id, "hall-3");
    assert_eq!(c.coap.listen.len(), 2);
    assert_eq!(
        (
            c.coap.max_payload,
            c.coap.dedup_capacity,
            c.coap.block_capacity
        ),
        (1024, 10, 2)
    );
    assert_eq!((c.coap.block_lifetime_s, c.coap.full_retry_after_s), (5, 9));
    assert_eq!(c.mqtt.endpoints[0].port, 8883);
    assert!(c.mqtt.endpoints[0].tls());
    assert_eq!(c.mqtt.client_id, "me");
    assert_eq!(c.mqtt.username.as_deref(), Some("u"));
    assert_eq!(c.mqtt.password_file, Some(PathBuf::from("/run/pw")));
    assert_eq!(c.mqtt.client_key, Some(PathBuf::from("c.key")));
    assert_eq!(c.mqtt.alpn, vec!["mqtt".to_string()]);
    assert_eq!((c.mqtt.keep_alive_s, c.mqtt.inflight), (5, 65535));
    assert_eq!(c.mqtt.status_topic.as_deref(), Some("gw/hall-3/up"));
    assert_eq!((c.mqtt.reconnect_min_ms, c.mqtt.reconnect_max_s), (100, 60));
    assert_eq!((c.mqtt.max_packet_size, c.mqtt.max_attempts), (4096, 7));
    assert_eq!(c.store.on_full, OnFull::DropOldest);
    assert_eq!((c.store.max_messages, c.store.max_bytes), (5, 2048));
    assert_eq!((c.store.cache_mb, c.store.commit_max_batch), (1, 64));
    assert_eq!(c.log.level, log::LevelFilter::Debug);
    let route = &c.routes[0];
    assert_eq!(route.methods, vec![Method::Get, Method::IPatch]);
    assert_eq!((route.qos, route.retain), (Qos::AtMostOnce, true));
    let got = c
        .router()
        .resolve(&["s", "sensor-1"], Method::Get, Some("sensor-1"));
    assert_eq!(
        got.and_then(|r| r.topic.for_record(None)),
        Ok("t/sensor-1".into())
    );
}

#[test]
fn unknown_template_variable_names_route_key_and_line() {
    let text = doc(&[
        "[mqtt]",                          // 1
        "url = \"mqtt://b\"",              // 2
        "[[route]]",                       // 3
        "resource = \"sensors/{device}\"", // 4
        "topic = \"s/{device}\"",          // 5
        "[[route]]",                       // 6
        "resource = \"more/{device}\"",    // 7
        "topic = \"m/{devce}\"",           // 8
    ]);
    assert_eq!(
        problem(&text),
        "c.toml:8: route[2].topic: unknown variable {devce}"
    );
}

#[test]
fn other_route_errors_name_their_key() {
    let text = with(&[
        "[[route]]",            // 8
        "resource = \"a//b\"",  // 9
        "topic = \"t\"",        // 10
        "[[route]]",            // 11
        "resource = \"c/{d}\"", // 12
        "topic = \"t\"",        // 13
        "identity = \"{e}\"",   // 14
        "[[route]]",            // 15
        "resource = \"f\"",     // 16
        "topic = \"t\"",        // 17
        "methods = []",         // 18
    ]);
    let all = problems(&text);
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all[0].starts_with("c.toml:9: route[2].resource: "),
        "{all:#?}"
    );
    assert!(
        all[1].starts_with("c.toml:14: route[3].identity: "),
        "{all:#?}"
    );
    assert!(
        all[2].starts_with("c.toml:18: route[4].methods: "),
        "{all:#?}"
    );
}

#[test]
fn a_route_without_resource_or_topic_is_reported_at_its_header() {
    let all = problems(&with(&["[[route]]", "qos = 0"]));
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all[0].starts_with("c.toml:8: route[2].resource: missing"));
    assert!(all[1].starts_with("c.toml:8: route[2].topic: missing"));
}

#[test]
fn unknown_key_is_an_error_with_a_suggestion() {
    let text = with(&["[coap]", "lisen = [\"127.0.0.1:5683\"]"]);
    assert_eq!(
        problem(&text),
        "c.toml:9: coap.lisen: unknown key; did you mean \"listen\"?"
    );
}

#[test]
fn unknown_keys_are_errors_everywhere() {
    let text = with(&[
        "colour = \"blue\"", // 8: in [[route]]
        "[coap]",            // 9
        "[mqtt2]",           // 10
        "x = 1",             // 11
        "[[routes]]",        // 12
        "resource = \"b\"",  // 13
    ]);
    let all = problems(&text);
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(all[0].starts_with("c.toml:8: route[1].colour: unknown key; expected one of: resource"));
    assert!(all[1].starts_with("c.toml:10: mqtt2: unknown key; did you mean \"mqtt\"?"));
    assert!(all[2].starts_with("c.toml:12: routes: unknown key; did you mean \"route\"?"));
}

#[test]
fn bad_url_scheme_is_an_error_naming_the_key() {
    let text = doc(&[
        "[mqtt]",
        "url = \"http://broker:1883\"",
        "[[route]]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]);
    let got = problem(&text);
    assert!(
        got.starts_with("c.toml:2: mqtt.url: unsupported scheme \"http://\""),
        "{got}"
    );
}

#[test]
fn missing_url_is_an_error() {
    let got = problem(&doc(&["[[route]]", "resource = \"a\"", "topic = \"b\""]));
    assert!(got.starts_with("c.toml:1: mqtt.url: missing"), "{got}");
}

#[test]
fn urls_parse_into_endpoints() {
    let ep = |scheme, host: &str, port, path: &str| Endpoint {
        scheme,
        host: host.into(),
        port,
        path: path.into(),
    };
    let parse = sections::parse_url;
    assert_eq!(parse("mqtt://b"), Ok(ep(Scheme::Mqtt, "b", 1883, "")));
    assert_eq!(parse("mqtt://b:1884"), Ok(ep(Scheme::Mqtt, "b", 1884, "")));
    assert_eq!(
        parse("mqtts://b.example.com"),
        Ok(ep(Scheme::Mqtts, "b.example.com", 8883, ""))
    );
    assert_eq!(parse("MQTTS://b:443/"), Ok(ep(Scheme::Mqtts, "b", 443, "")));
    assert_eq!(parse("mqtt://[::1]"), Ok(ep(Scheme::Mqtt, "::1", 1883, "")));
    assert_eq!(
        parse("mqtts://[fe80::1]:9"),
        Ok(ep(Scheme::Mqtts, "fe80::1", 9, ""))
    );
    assert_eq!(parse("ws://b"), Ok(ep(Scheme::Ws, "b", 80, "/mqtt")));
    assert_eq!(
        parse("wss://b.example.com/ws/mqtt"),
        Ok(ep(Scheme::Wss, "b.example.com", 443, "/ws/mqtt"))
    );
    assert_eq!(parse("wss://b:8443/"), Ok(ep(Scheme::Wss, "b", 8443, "/")));
    for bad in [
        "b:1883",
        "tcp://b",
        "http://b",
        "mqtt://",
        "mqtt://:1883",
        "mqtt://b:0",
        "mqtt://b:65536",
        "mqtt://b:+1",
        "mqtt://b:x",
        "mqtt://b/topic",
        "mqtt://u:p@b",
        "mqtt://[::1",
        "mqtt://[nope]",
        "mqtt://::1",
        "mqtt://b c",
        "wss://u:p@b/mqtt",
        "wss://b/mqtt?x=1",
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_list_of_brokers_is_tried_in_order() {
    let c = valid(&doc(&[
        "[mqtt]",
        "url = [\"mqtt://n1:4222\", \"mqtt://n2:4223\", \"wss://cloud.example.com/mqtt\"]",
        "ca_file = \"ca.pem\"",
        "[[route]]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]));
    let hosts: Vec<&str> = c.mqtt.endpoints.iter().map(|e| e.host.as_str()).collect();
    assert_eq!(hosts, ["n1", "n2", "cloud.example.com"]);
}

#[test]
fn tls_keys_with_only_plain_brokers_are_an_error_naming_the_key() {
    let got = problem(&doc(&[
        "[mqtt]",
        "url = \"ws://b/mqtt\"",
        "ca_file = \"ca.pem\"",
        "[[route]]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]));
    assert!(
        got.starts_with("c.toml:3: mqtt.ca_file: is only used with mqtts:// or wss://"),
        "{got}"
    );
}

#[test]
fn protocol_and_proxy_are_checked() {
    let c = valid(&doc(&[
        "[mqtt]",
        "url = \"mqtt://b\"",
        "protocol = \"3.1.1\"",
        "proxy = \"http://proxy.lan:3128\"",
        "[[route]]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]));
    assert_eq!(c.mqtt.protocol, Protocol::V311);
    assert_eq!(
        c.mqtt.proxy.as_ref().map(|p| (p.host.as_str(), p.port)),
        Some(("proxy.lan", 3128))
    );
    let unknown = problem(&doc(&[
        "[mqtt]",
        "url = \"mqtt://b\"",
        "protocol = \"4\"",
        "[[route]]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]));
    assert!(
        unknown.starts_with("c.toml:3: mqtt.protocol: unknown protocol \"4\""),
        "{unknown}"
    );
    let no_host = problem(&doc(&[
        "[mqtt]",
        "url = \"mqtt://b\"",
        "proxy = \"http://:3128\"",
        "[[route]]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]));
    assert!(
        no_host.starts_with("c.toml:3: mqtt.proxy: \"http://:3128\" has no host"),
        "{no_host}"
    );
}

#[test]
fn bad_listen_address_is_reported_at_its_line() {
    let text = with(&[
        "[coap]",                // 8
        "listen = [",            // 9
        "  \"127.0.0.1:5683\",", // 10
        "  \"localhost:5683\",", // 11
        "]",                     // 12
    ]);
    let got = problem(&text);
    assert!(
        got.starts_with("c.toml:11: coap.listen: \"localhost:5683\" is not an IP address and port"),
        "{got}"
    );
}

#[test]
fn empty_listen_disables_plain_coap() {
    assert!(valid(&with(&["[coap]", "listen = []"]))
        .coap
        .listen
        .is_empty());
}

#[test]
fn qos_2_is_refused() {
    let got = problem(&with(&["qos = 2"]));
    assert_eq!(
        got,
        "c.toml:8: route[1].qos: qos 2 is not supported; use 1 (at least once) or 0 (at most once)"
    );
}

#[test]
fn unknown_method_is_refused() {
    let got = problem(&with(&["methods = [\"POST\", \"SEND\"]"]));
    assert!(
        got.starts_with(
            "c.toml:8: route[1].methods: unknown method \"SEND\"; expected one of GET, POST"
        ),
        "{got}"
    );
}

#[test]
fn on_full_typo_is_refused() {
    let got = problem(&with(&["[store]", "on_full = \"drop_oldest\""]));
    assert_eq!(
        got,
        "c.toml:9: store.on_full: unknown value \"drop_oldest\"; expected \"reject\" or \"drop-oldest\""
    );
}

#[test]
fn no_route_is_an_error_on_line_1() {
    let got = problem(&doc(&["[mqtt]", "url = \"mqtt://b\""]));
    assert!(
        got.starts_with("c.toml:1: route: no [[route]] table"),
        "{got}"
    );
}

#[test]
fn an_empty_route_list_is_an_error_where_it_is() {
    let got = problem(&doc(&[
        "# no routes yet",
        "route = []",
        "[mqtt]",
        "url = \"mqtt://b\"",
    ]));
    assert!(
        got.starts_with("c.toml:2: route: no [[route]] table"),
        "{got}"
    );
}

#[test]
fn a_single_bracket_route_table_is_explained() {
    let got = problem(&doc(&[
        "[mqtt]",
        "url = \"mqtt://b\"",
        "[route]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]));
    assert!(
        got.starts_with("c.toml:3: route: expected an array of tables ([[route]])"),
        "{got}"
    );
}

#[test]
fn client_cert_needs_client_key() {
    let text = doc(&[
        "[mqtt]",
        "url = \"mqtts://b\"",
        "client_cert = \"c.pem\"",
        "[[route]]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]);
    assert_eq!(
        problem(&text),
        "c.toml:3: mqtt.client_cert: needs mqtt.client_key too: a client certificate goes with its key"
    );
}

#[test]
fn tls_options_with_plain_mqtt_are_refused() {
    let text = doc(&[
        "[mqtt]",                  // 1
        "url = \"mqtt://b\"",      // 2
        "ca_file = \"ca.pem\"",    // 3
        "client_cert = \"c.pem\"", // 4
        "client_key = \"c.key\"",  // 5
        "alpn = [\"mqtt\"]",       // 6
        "[[route]]",
        "resource = \"a\"",
        "topic = \"b\"",
    ]);
    let all = problems(&text);
    let expected: Vec<String> = [
        (3, "ca_file"),
        (4, "client_cert"),
        (5, "client_key"),
        (6, "alpn"),
    ]
    .iter()
    .map(|(line, key)| {
        format!(
            "c.toml:{line}: mqtt.{key}: is only used with mqtts:// or wss://, and mqtt.url is \"mqtt://b\""
        )
    })
    .collect();
    assert_eq!(all, expected);
}

#[test]
fn password_file_needs_username() {
    assert_eq!(
        problem(&in_mqtt(&["password_file = \"pw\""])),
        "c.toml:8: mqtt.password_file: needs mqtt.username too: MQTT sends a password only with a user name"
    );
}

#[test]
fn several_problems_are_all_reported_in_line_order() {
    let text = doc(&[
        "[gateway]",                      // 1
        "id = \"hall/3\"",                // 2
        "[coap]",                         // 3
        "listen = [\"nowhere\"]",         // 4
        "max_payload = 0",                // 5
        "[mqtt]",                         // 6
        "url = \"mqtt://b\"",             // 7
        "keep_alive_s = \"30\"",          // 8
        "inflight = 0",                   // 9
        "status_topic = \"gw/+/status\"", // 10
        "[store]",                        // 11
        "on_full = \"drop\"",             // 12
        "[log]",                          // 13
        "level = \"verbose\"",            // 14
        "[[route]]",                      // 15
        "resource = \"a/{x}\"",           // 16
        "topic = \"t/{y}\"",              // 17
        "[[route]]",                      // 18
        "resource = \"b\"",               // 19
        "topic = \"t\"",                  // 20
        "qos = 2",                        // 21
        "extra = true",                   // 22
    ]);
    let all = problems(&text);
    let located: Vec<&str> = all
        .iter()
        .map(|p| p.split(": ").take(2).last().unwrap_or(""))
        .collect();
    assert_eq!(
        located,
        [
            "gateway.id",
            "coap.listen",
            "coap.max_payload",
            "mqtt.keep_alive_s",
            "mqtt.inflight",
            "mqtt.status_topic",
            "store.on_full",
            "log.level",
            "route[1].topic",
            "route[2].qos",
            "route[2].extra",
        ],
        "{all:#?}"
    );
    let lines: Vec<&str> = all
        .iter()
        .map(|p| p.split(':').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        lines,
        ["2", "4", "5", "8", "9", "10", "12", "14", "17", "21", "22"]
    );
}

#[test]
fn wrong_types_are_reported_with_what_was_found() {
    let all = problems(&with(&[
        "retain = \"yes\"",            // 8
        "[coap]",                      // 9
        "max_payload = 1.5",           // 10
        "block_capacity = 1979-05-27", // 11
        "listen = \"127.0.0.1:5683\"", // 12
    ]));
    assert_eq!(
        all,
        [
            "c.toml:8: route[1].retain: expected true or false, found a string",
            "c.toml:10: coap.max_payload: expected an integer, found a float",
            "c.toml:11: coap.block_capacity: expected an integer, found a date-time",
            "c.toml:12: coap.listen: expected a list of strings, found a string",
        ]
    );
}

#[test]
fn numbers_out_of_range_are_refused() {
    let all = problems(&in_mqtt(&[
        "keep_alive_s = 4",     // 8
        "inflight = 65536",     // 9
        "reconnect_max_s = -1", // 10
    ]));
    assert_eq!(
        all,
        [
            "c.toml:8: mqtt.keep_alive_s: must be between 5 and 65535, found 4",
            "c.toml:9: mqtt.inflight: must be between 1 and 65535, found 65536",
            "c.toml:10: mqtt.reconnect_max_s: must be at least 1, found -1",
        ]
    );
}

#[test]
fn a_syntax_error_gives_its_line() {
    let got = problem(&with(&["[coap]", "listen = [\"a\" \"b\"]"]));
    assert!(got.starts_with("c.toml:9: "), "{got}");
    assert!(!got.contains('\n'), "{got}");
}

#[test]
fn a_duplicate_key_gives_its_line() {
    let got = problem(&with(&["qos = 0", "qos = 1"]));
    assert!(got.starts_with("c.toml:9: "), "{got}");
    assert!(got.contains("duplicate key"), "{got}");
}

#[test]
fn dotted_keys_and_inline_tables_are_read_like_sections() {
    let c = valid(&doc(&[
        "gateway.id = \"g\"",
        "mqtt = { url = \"mqtts://b\", alpn = [\"x\"] }",
        "route = [{ resource = \"a\", topic = \"b\" }]",
    ]));
    assert_eq!((c.gateway.id.as_str(), c.mqtt.alpn.len()), ("g", 1));
    let got = problem(&doc(&[
        "gateway.id = \"g\"",
        "mqtt = { url = \"mqtts://b\", alpn = [\"\"] }",
        "route = [{ resource = \"a\", topic = \"b\" }]",
    ]));
    assert_eq!(got, "c.toml:2: mqtt.alpn: \"\" must be 1 to 255 bytes long");
}

#[test]
fn gateway_id_must_be_one_topic_level() {
    let text = with(&[]).replace("id = \"gw1\"", "id = \"hall/3\"");
    assert_eq!(
        problem(&text),
        "c.toml:2: gateway.id: must not contain /, +, # or control characters: \
         it fills {gateway} as one topic level"
    );
    for bad in ["a+", "#", "", "tab\t"] {
        let text = with(&[]).replace("id = \"gw1\"", &format!("id = {bad:?}"));
        let got = problem(&text);
        assert!(got.starts_with("c.toml:2: gateway.id: "), "{bad:?}: {got}");
    }
}

#[test]
fn status_topic_is_expanded_or_disabled() {
    let topic = |t: &str| sections::expand_status_topic(t, "gw1");
    assert_eq!(topic("x/{gateway}/y"), Ok(Some("x/gw1/y".into())));
    assert_eq!(topic("plain"), Ok(Some("plain".into())));
    assert_eq!(topic(""), Ok(None));
    for bad in ["a/+", "a/#", "{gw}", "{gateway", "gateway}", "$SYS/x"] {
        assert!(topic(bad).is_err(), "{bad:?}");
    }
    let c = valid(&in_mqtt(&["status_topic = \"\""]));
    assert_eq!(c.mqtt.status_topic, None);
}

#[test]
fn status_topic_with_an_unknown_variable_is_refused() {
    assert_eq!(
        problem(&in_mqtt(&["status_topic = \"s/{gw}\""])),
        "c.toml:8: mqtt.status_topic: unknown variable {gw}; only {gateway} can be used here"
    );
}

#[test]
fn max_payload_must_fit_in_an_mqtt_packet() {
    let got = problem(&with(&["[coap]", "max_payload = 300000"]));
    assert!(
        got.starts_with("c.toml:9: coap.max_payload: 300000 is more than mqtt.max_packet_size"),
        "{got}"
    );
}

#[test]
fn reconnect_min_must_not_exceed_max() {
    let got = problem(&in_mqtt(&[
        "reconnect_min_ms = 5000",
        "reconnect_max_s = 2",
    ]));
    assert!(
        got.starts_with("c.toml:8: mqtt.reconnect_min_ms: 5000 ms is longer than"),
        "{got}"
    );
}

#[test]
fn log_level_is_validated() {
    let got = problem(&with(&["[log]", "level = \"loud\""]));
    assert!(
        got.starts_with("c.toml:9: log.level: unknown level \"loud\""),
        "{got}"
    );
    assert_eq!(
        valid(&with(&["[log]", "level = \"TRACE\""])).log.level,
        log::LevelFilter::Trace
    );
}

#[test]
fn a_missing_file_names_the_file() {
    let path = Path::new("/nonexistent/coap2mqtt.toml");
    let err = Config::load(path).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, None);
    let shown = err.to_string();
    assert!(
        shown.starts_with("/nonexistent/coap2mqtt.toml: cannot read: "),
        "{shown}"
    );
    assert!(shown.contains("os error 2"), "{shown}");
}

#[test]
fn load_reads_the_file_and_names_it_as_given() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, with(&["qos = 3"])).expect("write");
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.problems[0].file, path);
    assert!(err
        .to_string()
        .starts_with(&format!("{}:8: ", path.display())));
    std::fs::write(&path, with(&[])).expect("write");
    assert_eq!(Config::load(&path).expect("valid").source, path);
}

#[test]
fn a_file_that_is_not_text_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bin.toml");
    std::fs::write(&path, b"id = \"\xff\"").expect("write");
    let shown = Config::load(&path).unwrap_err().to_string();
    assert!(
        shown.ends_with("is not UTF-8 text (invalid byte at offset 6)"),
        "{shown}"
    );
}

#[test]
fn read_password_trims_one_trailing_newline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pw");
    let mut mqtt = valid(&with(&[])).mqtt;
    assert_eq!(mqtt.read_password().expect("no file"), None);
    mqtt.password_file = Some(path.clone());
    for (content, expected) in [
        ("s3cret\n", "s3cret"),
        ("s3cret", "s3cret"),
        ("a b\r\n", "a b"),
        ("x\n\n", "x\n"),
    ] {
        std::fs::write(&path, content).expect("write");
        assert_eq!(
            mqtt.read_password().expect("readable").as_deref(),
            Some(expected)
        );
    }
}

#[test]
fn read_password_names_the_file_it_cannot_read() {
    let mut mqtt = valid(&with(&[])).mqtt;
    mqtt.password_file = Some(PathBuf::from("/nonexistent/pw"));
    let shown = mqtt.read_password().unwrap_err().to_string();
    assert!(
        shown.starts_with("/nonexistent/pw: mqtt.password_file: cannot read: "),
        "{shown}"
    );
}

#[test]
fn an_empty_password_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pw");
    std::fs::write(&path, "\n").expect("write");
    let mut mqtt = valid(&with(&[])).mqtt;
    mqtt.password_file = Some(path);
    assert!(mqtt
        .read_password()
        .unwrap_err()
        .to_string()
        .ends_with("is empty"));
}

#[test]
fn problems_display_without_line_or_key() {
    let p = Problem {
        file: "x.toml".into(),
        line: None,
        key: String::new(),
        message: "cannot read: gone".into(),
    };
    assert_eq!(p.to_string(), "x.toml: cannot read: gone");
    let errors = ConfigErrors {
        problems: vec![p.clone(), p],
    };
    assert_eq!(
        errors.to_string(),
        "x.toml: cannot read: gone\nx.toml: cannot read: gone"
    );
}

#[test]
fn router_tries_routes_in_file_order() {
    let c = valid(&with(&[
        "[[route]]",
        "resource = \"a/{x}\"",
        "topic = \"second/{x}\"",
        "methods = [\"GET\"]",
    ]));
    let router = c.router();
    assert_eq!(
        router
            .resolve(&["a", "1"], Method::Post, None)
            .and_then(|r| r.topic.for_record(None)),
        Ok("t/1".into())
    );
    assert_eq!(
        router
            .resolve(&["a", "1"], Method::Get, None)
            .and_then(|r| r.topic.for_record(None)),
        Ok("second/1".into())
    );
    assert_eq!(
        router.resolve(&["b"], Method::Get, None),
        Err(Refusal::NotFound)
    );
}

// [dtls]

#[test]
fn dtls_is_off_without_credentials() {
    let c = valid(&with(&[]));
    assert!(!c.dtls.enabled());
    assert!(c.dtls.listen.is_empty());
}

#[test]
fn a_psk_file_turns_dtls_on_on_every_interface_with_all_suites() {
    let c = valid(&with(&["[dtls]", "psk_file = \"psk.toml\""]));
    assert!(c.dtls.enabled());
    assert_eq!(
        c.dtls.listen,
        vec!["0.0.0.0:5684"
            .parse::<std::net::SocketAddr>()
            .expect("addr")]
    );
    assert_eq!(c.dtls.psk_suites().len(), 3);
    assert!(c.dtls.certificate_suites().is_empty());
    assert_eq!(c.dtls.handshake_timeout_s, 10);
}

#[test]
fn dtls_listen_without_credentials_is_an_error() {
    assert_eq!(
        problem(&with(&["[dtls]", "listen = [\"0.0.0.0:5684\"]"])),
        "c.toml:9: dtls.listen: needs dtls.psk_file or dtls.certificate: a DTLS listener must \
         have credentials to authenticate devices"
    );
}

#[test]
fn a_certificate_needs_its_key_and_the_client_ca() {
    let p = problem(&with(&["[dtls]", "certificate = \"c.pem\""]));
    assert!(
        p.starts_with("c.toml:9: dtls.certificate: needs dtls.private_key and dtls.client_ca too"),
        "{p}"
    );
}

#[test]
fn cipher_suites_are_checked_by_name_and_against_the_credentials() {
    let c = valid(&with(&[
        "[dtls]",
        "psk_file = \"p\"",
        "cipher_suites = [\"TLS_PSK_WITH_AES_128_CCM_8\"]",
    ]));
    assert_eq!(c.dtls.psk_suites(), vec![CipherSuite::PskAes128Ccm8]);
    let p = problem(&with(&[
        "[dtls]",
        "psk_file = \"p\"",
        "cipher_suites = [\"TLS_PSK_WITH_AES_128_CBC_SHA256\"]",
    ]));
    assert!(
        p.starts_with("c.toml:10: dtls.cipher_suites: unknown cipher suite"),
        "{p}"
    );
    let p = problem(&with(&[
        "[dtls]",
        "psk_file = \"p\"",
        "cipher_suites = [\"TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8\"]",
    ]));
    assert!(p.contains("has no TLS_PSK_* suite"), "{p}");
}
#[test]
fn admin_listens_on_loopback_by_default_and_empty_turns_it_off() {
    let default = valid(&with(&[]));
    assert_eq!(
        default.admin.listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    let off = valid(&with(&["[admin]", "listen = \"\""]));
    assert_eq!(off.admin.listen, None);
    let any = valid(&with(&["[admin]", "listen = \"[::]:9100\""]));
    assert_eq!(any.admin.listen, Some("[::]:9100".parse().unwrap()));
}

#[test]
fn the_admin_socket_is_in_the_runtime_directory_by_default_and_empty_turns_it_off() {
    let default = valid(&with(&[]));
    assert_eq!(
        default.admin.socket,
        Some(PathBuf::from("/run/coap2mqtt/admin.sock"))
    );
    let off = valid(&with(&["[admin]", "socket = \"\""]));
    assert_eq!(off.admin.socket, None);
    let elsewhere = valid(&with(&["[admin]", "socket = \"/tmp/a.sock\""]));
    assert_eq!(elsewhere.admin.socket, Some(PathBuf::from("/tmp/a.sock")));
    let long = format!("socket = \"/{}\"", "x".repeat(120));
    assert!(problem(&with(&["[admin]", &long])).contains("longer than 107 bytes"));
}

#[test]
fn admin_listen_must_be_an_address_and_port() {
    assert_eq!(
        problem(&with(&["[admin]", "listen = \"localhost:9464\""])),
        "c.toml:9: admin.listen: \"localhost:9464\" is not an IP address and port, \
         like \"127.0.0.1:9464\"; \"\" turns the endpoint off"
    );
}
