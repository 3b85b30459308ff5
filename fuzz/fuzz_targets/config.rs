//! Any text as a config file: parsed, validated, and on success compiled
//! into routes; a problem is an error with a line, never a panic.
#![no_main]

use coap2mqtt::config::Config;
use coap2mqtt::route::Method;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, Path::new("fuzz.toml")) {
        Ok(config) => {
            let router = config.router();
            let _ = router.resolve(&["sensors", "a", "b"], Method::Post, Some("a"));
        }
        Err(errors) => {
            assert!(!errors.problems.is_empty());
            let _ = errors.to_string();
        }
    }
});
