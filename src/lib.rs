//! coap2mqtt: a CoAP/UDP (and DTLS) gateway that stores every device message
//! durably and forwards it to an MQTT broker with QoS 1.
//!
//! The path of one message, module by module (see docs/ARCHITECTURE.md):
//! `transport` (datagrams) -> `coap` (sans-IO exchange: parse, dedup,
//! block-wise, decide) -> `route` (resource -> topic, access control) ->
//! `store` (durable queue, group commit) -> `uplink` (MQTT session).
//! `daemon` wires them together.

pub mod admin;
pub mod clock;
pub mod coap;
pub mod command;
pub mod config;
pub mod daemon;
pub mod devices;
pub mod histogram;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod reload;
pub mod route;
pub mod store;
pub mod translate;
pub mod transport;
pub mod uplink;
pub mod watchdog;
