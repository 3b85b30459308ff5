//! Who can reach plain CoAP, judged from the config alone (a pure function,
//! so the decision is tested without sockets).
//!
//! Plain CoAP is unencrypted and carries no identity: whoever can send a
//! datagram to its port can publish on the broker under the gateway's own
//! MQTT credentials, through any route that does not ask for a DTLS
//! identity. So the packaged config serves it on loopback only (as
//! mosquitto 2 does for MQTT), the daemon says so at start, and it warns
//! when plain CoAP is open to the network with a route that takes it.

use super::RouteConfig;
use std::net::SocketAddr;
use std::path::Path;

/// What plain CoAP is exposed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlainCoap {
    /// `coap.listen = []`.
    Off,
    /// Every address is a loopback one: only programs on this machine.
    LoopbackOnly(Vec<SocketAddr>),
    /// Some address reaches the network, but every route needs a DTLS
    /// identity, so plain CoAP requests can only be refused (4.03).
    OpenButRefused(Vec<SocketAddr>),
    /// Some address reaches the network and these routes (numbered from 1,
    /// as in config errors) accept requests without an identity.
    Open {
        network: Vec<SocketAddr>,
        routes: Vec<usize>,
    },
}

impl PlainCoap {
    /// Judges `listen` (coap.listen) against the routes.
    pub fn judge(listen: &[SocketAddr], routes: &[RouteConfig]) -> PlainCoap {
        if listen.is_empty() {
            return PlainCoap::Off;
        }
        let network: Vec<SocketAddr> = listen
            .iter()
            .filter(|a| !a.ip().is_loopback())
            .copied()
            .collect();
        if network.is_empty() {
            return PlainCoap::LoopbackOnly(listen.to_vec());
        }
        let open: Vec<usize> = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| !needs_identity(r))
            .map(|(i, _)| i + 1)
            .collect();
        match open.is_empty() {
            true => PlainCoap::OpenButRefused(network),
            false => PlainCoap::Open {
                network,
                routes: open,
            },
        }
    }

    /// How loud the start-up line about it is.
    pub fn level(&self) -> log::Level {
        match self {
            PlainCoap::Open { .. } => log::Level::Warn,
            _ => log::Level::Info,
        }
    }

    /// The start-up line: what is exposed and what to do about it, naming
    /// `config` (the file to edit).
    pub fn describe(&self, config: &Path) -> String {
        let file = config.display();
        match self {
            PlainCoap::Off => "coap: plain CoAP is off (coap.listen = []); devices use DTLS".into(),
            PlainCoap::LoopbackOnly(addrs) => format!(
                "coap: plain CoAP (no encryption, no authentication) is served on loopback only ({}): \
                 devices on the network use DTLS; to open plain CoAP to the network, add an address \
                 such as \"0.0.0.0:5683\" to coap.listen in {file} and restart",
                list(addrs)
            ),
            PlainCoap::OpenButRefused(addrs) => format!(
                "coap: plain CoAP is open to the network on {}, but every route requires a DTLS \
                 identity, so its requests are refused (4.03)",
                list(addrs)
            ),
            PlainCoap::Open { network, routes } => {
                let routes: Vec<String> = routes.iter().map(|n| format!("route[{n}]")).collect();
                format!(
                    "coap: plain CoAP (no encryption, no authentication) is open to the network on {}, \
                     and requests without a DTLS identity are taken by {}: anyone who can reach that \
                     port can publish to the broker as this gateway. In {file}, serve plain CoAP on loopback only (coap.listen = \
                     [\"127.0.0.1:5683\", \"[::1]:5683\"]) and use DTLS, or restrict those routes \
                     with identity or identities",
                    list(network),
                    routes.join(", ")
                )
            }
        }
    }
}

/// A route plain CoAP cannot use: it asks for a DTLS identity, directly or
/// through `{identity}` in its topic.
fn needs_identity(route: &RouteConfig) -> bool {
    route.identity.is_some() || !route.identities.is_empty() || route.topic.contains("{identity}")
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Qos;
    use crate::route::Method;

    fn route(topic: &str) -> RouteConfig {
        RouteConfig {
            resource: "s/{device}".into(),
            topic: topic.into(),
            methods: vec![Method::Post],
            qos: Qos::AtLeastOnce,
            retain: false,
            identity: None,
            identities: Vec::new(),
            expiry_s: None,
            payload: crate::route::Payload::Raw,
            split: false,
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("address")).collect()
    }

    #[test]
    fn no_plain_listener_is_off() {
        assert_eq!(
            PlainCoap::judge(&[], &[route("t/{device}")]),
            PlainCoap::Off
        );
    }

    #[test]
    fn loopback_addresses_of_both_families_are_loopback_only() {
        let listen = addrs(&["127.0.0.1:5683", "[::1]:5683"]);
        let judged = PlainCoap::judge(&listen, &[route("t/{device}")]);
        assert_eq!(judged, PlainCoap::LoopbackOnly(listen));
        assert_eq!(judged.level(), log::Level::Info);
    }

    #[test]
    fn the_loopback_line_says_how_to_open_plain_coap() {
        let line = PlainCoap::judge(&addrs(&["127.0.0.1:5683"]), &[])
            .describe(Path::new("/etc/coap2mqtt/coap2mqtt.toml"));
        assert!(line.contains("loopback only (127.0.0.1:5683)"), "{line}");
        assert!(
            line.contains("\"0.0.0.0:5683\" to coap.listen in /etc/coap2mqtt/coap2mqtt.toml"),
            "{line}"
        );
    }

    #[test]
    fn a_wildcard_address_with_an_open_route_warns_and_names_the_route() {
        let routes = [route("t/{identity}"), route("t/{device}")];
        let judged = PlainCoap::judge(&addrs(&["127.0.0.1:5683", "0.0.0.0:5683"]), &routes);
        assert_eq!(
            judged,
            PlainCoap::Open {
                network: addrs(&["0.0.0.0:5683"]),
                routes: vec![2],
            }
        );
        assert_eq!(judged.level(), log::Level::Warn);
        let line = judged.describe(Path::new("gw.toml"));
        assert!(
            line.contains(
                "on 0.0.0.0:5683, and requests without a DTLS identity are taken by route[2]:"
            ),
            "{line}"
        );
        assert!(line.contains("In gw.toml"), "{line}");
    }

    #[test]
    fn a_specific_network_address_is_open_too() {
        let judged = PlainCoap::judge(&addrs(&["192.0.2.7:5683"]), &[route("t")]);
        assert_eq!(judged.level(), log::Level::Warn);
        let judged = PlainCoap::judge(&addrs(&["[::]:5683"]), &[route("t")]);
        assert_eq!(judged.level(), log::Level::Warn);
    }

    #[test]
    fn routes_that_all_need_an_identity_make_an_open_listener_harmless() {
        let mut by_capture = route("t/{device}");
        by_capture.identity = Some("{device}".into());
        let mut by_glob = route("t/{device}");
        by_glob.identities = vec!["sensor-*".into()];
        let by_topic = route("t/{identity}");
        let judged = PlainCoap::judge(&addrs(&["0.0.0.0:5683"]), &[by_capture, by_glob, by_topic]);
        assert_eq!(judged, PlainCoap::OpenButRefused(addrs(&["0.0.0.0:5683"])));
        assert_eq!(judged.level(), log::Level::Info);
    }
}
