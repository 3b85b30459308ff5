//! Route patterns, templates and request paths from the fuzzer: building a
//! route may fail, resolving may refuse, but a resolved topic is always a
//! valid MQTT topic name, also once a SenML record's name is put in.
#![no_main]

use coap2mqtt::message::Qos;
use coap2mqtt::route::{Method, Payload, Route, RouteSpec, Router};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let resource = parts.next().unwrap_or_default();
    let topic = parts.next().unwrap_or_default();
    let identity = parts.next().filter(|s| !s.is_empty());
    let globs: Vec<String> = parts.next().map(|s| s.split(',').map(String::from).collect()).unwrap_or_default();
    let path: Vec<&str> = parts.next().unwrap_or_default().split('/').collect();
    let device = parts.next();
    let record_name = parts.next();
    let split = data.first().is_some_and(|b| b & 1 == 1);
    let spec = RouteSpec {
        resource,
        topic,
        methods: &[Method::Post],
        qos: Qos::AtLeastOnce,
        retain: false,
        identity,
        identities: &globs,
        expiry_s: None,
        payload: if split { Payload::Json } else { Payload::Raw },
        split,
    };
    if let Ok(route) = Route::new(&spec) {
        let router = Router::new("gw", vec![route]);
        if let Ok(resolved) = router.resolve(&path, Method::Post, device) {
            if let Ok(t) = resolved.topic.for_record(record_name) {
                assert!(!t.is_empty() && t.len() <= 65_535);
                assert!(!t.contains(['+', '#', '\0']), "{t:?}");
            }
        }
    }
});
