//! The parts of the chaos soak (tests/chaos_soak.rs): the device load, the
//! faults, and the summary.

pub mod devices;
pub mod faults;
pub mod ledger;
pub mod summary;
