//! SIGHUP: read the config again, apply what can change while running, and
//! say what cannot.
//!
//! Routes (and, with DTLS, the PSK file) change live: a device's next request
//! uses the new ones. Sockets, the store and the MQTT session are set up once;
//! a change to them is reported as needing a restart rather than applied half
//! way. A new config with any problem is refused whole and the running one
//! stays in force, so a typo during an edit never takes a gateway down.

use crate::config::{Config, ConfigErrors};

/// A config read again, and how it differs from the running one.
pub struct Reload {
    pub config: Config,
    pub routes_changed: bool,
    /// Sections that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Reads `running.source` again and compares it with `running`.
pub fn reread(running: &Config) -> Result<Reload, ConfigErrors> {
    let config = Config::load(&running.source)?;
    let mut needs_restart = Vec::new();
    if config.gateway != running.gateway {
        needs_restart.push("gateway");
    }
    if config.coap != running.coap {
        needs_restart.push("coap");
    }
    if config.dtls != running.dtls {
        needs_restart.push("dtls");
    }
    if config.mqtt != running.mqtt {
        needs_restart.push("mqtt");
    }
    if config.store != running.store {
        needs_restart.push("store");
    }
    Ok(Reload {
        routes_changed: config.routes != running.routes,
        needs_restart,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const BASE: &str = r#"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[route]]
resource = "a/{d}"
topic = "t/{d}"
"#;

    fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("c.toml");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        path
    }

    #[test]
    fn a_route_change_applies_and_nothing_needs_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let running = Config::load(&write(dir.path(), BASE)).expect("valid");
        write(dir.path(), &BASE.replace("t/{d}", "u/{d}"));
        let reload = reread(&running).expect("valid");
        assert!(reload.routes_changed);
        assert!(reload.needs_restart.is_empty());
    }

    #[test]
    fn a_broker_change_is_reported_as_needing_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let running = Config::load(&write(dir.path(), BASE)).expect("valid");
        write(dir.path(), &BASE.replace("1883", "1884"));
        let reload = reread(&running).expect("valid");
        assert!(!reload.routes_changed);
        assert_eq!(reload.needs_restart, vec!["mqtt"]);
    }

    #[test]
    fn a_broken_file_is_refused_with_its_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let running = Config::load(&write(dir.path(), BASE)).expect("valid");
        write(dir.path(), &BASE.replace("t/{d}", "t/{devce}"));
        let err = reread(&running).err().expect("refused");
        assert!(
            err.to_string().contains("unknown variable {devce}"),
            "{err}"
        );
    }
}
