//! The benchmark instrument of coap2mqtt: a CoAP load generator
//! (`coap-load`) and the driver (`bench`) that runs mosquitto, the release
//! daemon, a checking subscriber and the load, and writes
//! docs/BENCHMARKS.md. See that file for what each figure means.

pub mod coap;
pub mod harness;
pub mod hello;
pub mod link;
pub mod load;
pub mod report;
pub mod results;
