//! Placeholder until the config module lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    Reject,
    DropOldest,
}
