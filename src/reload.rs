//! SIGHUP: read the config again, apply what can change while running, and
//! say exactly what cannot.
//!
//! Applied live: the routes (a device's next request uses them) and
//! `log.level`; with DTLS, the daemon also reads the PSK file again. Every
//! other section (`[gateway]`, `[coap]`, `[dtls]`, `[mqtt]`, `[store]`,
//! `[admin]`) is set up once, so a change there is reported as needing a
//! restart and *not* applied, not even in part: the routes keep resolving
//! `{gateway}` to the running gateway id. What runs afterwards is the old
//! config with only the applied parts replaced, so a change that waits for
//! a restart is reported again on the next SIGHUP. A new config with any
//! problem is refused whole and the running one stays in force, so a typo
//! during an edit never takes a gateway down.

use crate::config::{Config, ConfigErrors};

/// A config read again: what now runs, what was applied, what waits.
pub struct Reload {
    /// The running config with the applied changes (and only those).
    pub config: Config,
    pub routes_changed: bool,
    pub log_level_changed: bool,
    /// Sections that changed but take effect only after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Reads `running.source` again and compares it with `running`.
pub fn reread(running: &Config) -> Result<Reload, ConfigErrors> {
    let new = Config::load(&running.source)?;
    let mut needs_restart = Vec::new();
    let mut differs = |changed: bool, section: &'static str| {
        if changed {
            needs_restart.push(section);
        }
    };
    differs(new.gateway != running.gateway, "gateway");
    differs(new.coap != running.coap, "coap");
    differs(new.dtls != running.dtls, "dtls");
    differs(new.mqtt != running.mqtt, "mqtt");
    differs(new.store != running.store, "store");
    differs(new.admin != running.admin, "admin");
    differs(new.commands != running.commands, "commands");
    let mut config = running.clone();
    let routes_changed = new.routes != running.routes;
    let log_level_changed = new.log.level != running.log.level;
    config.routes = new.routes;
    config.log = new.log;
    Ok(Reload {
        config,
        routes_changed,
        log_level_changed,
        needs_restart,
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
    fn a_log_level_change_applies_and_nothing_needs_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let running = Config::load(&write(dir.path(), BASE)).expect("valid");
        write(dir.path(), &format!("[log]\nlevel = \"debug\"\n{BASE}"));
        let reload = reread(&running).expect("valid");
        assert!(reload.log_level_changed);
        assert_eq!(reload.config.log.level, log::LevelFilter::Debug);
        assert!(reload.needs_restart.is_empty());
    }

    #[test]
    fn an_admin_change_needs_a_restart_and_is_not_recorded_as_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let running = Config::load(&write(dir.path(), BASE)).expect("valid");
        write(
            dir.path(),
            &format!("[admin]\nlisten = \"127.0.0.1:9999\"\n{BASE}"),
        );
        let reload = reread(&running).expect("valid");
        assert_eq!(reload.needs_restart, vec!["admin"]);
        assert_eq!(reload.config.admin, running.admin, "not applied");
        // Still waiting on the next SIGHUP.
        let again = reread(&reload.config).expect("valid");
        assert_eq!(again.needs_restart, vec!["admin"]);
    }

    #[test]
    fn a_gateway_id_change_with_a_route_change_keeps_the_running_id_in_topics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let with_gateway = |id: &str, topic: &str| {
            format!("[gateway]\nid = \"{id}\"\n{}", BASE.replace("t/{d}", topic))
        };
        let running =
            Config::load(&write(dir.path(), &with_gateway("old", "t/{d}"))).expect("valid");
        write(dir.path(), &with_gateway("new", "{gateway}/{d}"));
        let reload = reread(&running).expect("valid");
        assert!(reload.routes_changed);
        // The default client id (coap2mqtt-<gateway id>) changed with it.
        assert_eq!(reload.needs_restart, vec!["gateway", "mqtt"]);
        let router = reload.config.router();
        let resolved = router
            .resolve(&["a", "x"], crate::route::Method::Post, None)
            .expect("routed");
        assert_eq!(
            resolved.topic.for_record(None).as_deref(),
            Ok("old/x"),
            "the running gateway id, not the new one"
        );
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
