//! Upgrading from 0.1: the real daemon started on a queue written by
//! coap2mqtt 0.1 (sled, queue format 1; tests/fixtures/queue-0.1) converts
//! it in place at the first start and delivers every queued message, in
//! order per topic.

mod support;

use support::broker::Broker;
use support::daemon::{Daemon, DaemonConfig, RouteConfig};
use support::subscriber::Subscriber;
use support::{free_udp_port, WAIT};

#[test]
fn a_queue_of_version_0_1_is_converted_and_every_message_delivered_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("queue");
    std::fs::create_dir_all(&store).expect("store dir");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/queue-0.1");
    for file in ["db", "conf"] {
        std::fs::copy(fixture.join(file), store.join(file)).expect("copy the fixture");
    }
    let broker = Broker::start();
    let subscriber = Subscriber::start(broker.port(), "old/#");
    let mut config = DaemonConfig::new(free_udp_port(), broker.port())
        .route(RouteConfig::new("s/{d}", "old/{d}"));
    config.store_path = store.display().to_string();
    let daemon = Daemon::start_config(&config);
    daemon.wait_for_log(
        "converted the coap2mqtt 0.1 store: 60 queued messages and 0 dead letters kept",
        WAIT,
    );
    let got = subscriber.wait_for_count(60, WAIT);
    for device in 0..3 {
        let topic = format!("old/d{device}");
        let order: Vec<usize> = got
            .iter()
            .filter(|m| m.topic == topic)
            .filter_map(|m| m.payload_str().strip_prefix("v01-")?.parse().ok())
            .collect();
        let expected: Vec<usize> = (0..60).filter(|i| i % 3 == device).collect();
        assert_eq!(order, expected, "{topic}");
    }
    assert!(store.join("segments").is_dir() && !store.join("db").exists());
    assert!(
        !dir.path().join("queue.format1").exists(),
        "the old store is gone"
    );
}
