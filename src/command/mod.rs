//! Commands to devices: the mirror image of the uplink. A cloud application
//! publishes a command on MQTT; the gateway keeps it in a durable
//! per-device mailbox and hands it to the device when the device asks for
//! it (poll), in the answer to the device's own upload (piggyback), or by
//! sending it the request right after an upload, while it listens (push).
//!
//! The promise is the uplink's, reversed: **a command the gateway
//! acknowledged to the broker (PUBACK) is on disk** (`journal.rs` fsyncs it
//! first), and it reaches the device or its expiry is reported, whatever
//! restarts happen in between. Every change of a command's state is
//! published to its result topic through the main queue, so results share
//! the queue's guarantees.
//!
//! The parts, each without I/O except the journal:
//! - `table.rs`: the `[[command]]` tables: which MQTT topics are commands,
//!   for which device and resource, delivered how.
//! - `mailbox.rs`: per-device FIFOs with caps and expiry (sans-IO).
//! - `journal.rs`: the append-only, fsynced record the mailbox is rebuilt
//!   from after a restart.
//! - `outcome.rs`: the JSON published for each state change.
//! - `service.rs`: the shared mailbox behind a lock, with the journal, as
//!   the uplink (intake) and the CoAP servers (delivery) use it.
//!
//! Delivery modes: `push` (the gateway, as a CoAP client, sends the request
//! in the window after each upload of the device: `coap/client.rs`),
//! `poll` (the device GETs `cmd`) and `piggyback` (the 2.04 of an upload
//! carries the command).

pub mod journal;
pub mod mailbox;
pub mod outcome;
pub mod runtime;
pub mod service;
pub mod table;

use crate::route::Method;

/// One command as the mailbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Unique for this gateway, increasing (the journal hands them out).
    pub id: u64,
    pub device: String,
    /// The device's resource the command is for, e.g. "config/interval".
    pub resource: String,
    pub method: Method,
    pub payload: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub expires_ms: u64,
    pub delivery: Delivery,
    /// Where its results go; `None`: nowhere.
    pub result_topic: Option<String>,
    /// MQTT 5 Correlation Data of the command, echoed in its results.
    pub correlation: Option<Vec<u8>>,
    /// A device over DTLS must have authenticated as this identity to get
    /// it (a table's `identity = true`).
    pub identity_required: bool,
    /// Push: how long after an upload the device listens (the window for
    /// sending it and retransmitting).
    pub awake_s: u32,
}

/// How a command reaches its device (a table's `delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The gateway sends the request to the device in the window after
    /// each of its uploads (the default).
    Push,
    /// The device GETs the mailbox resource.
    Poll,
    /// The 2.04 to the device's upload carries it (and poll works too).
    Piggyback,
}

impl Delivery {
    pub fn from_name(name: &str) -> Option<Delivery> {
        match name {
            "push" => Some(Delivery::Push),
            "poll" => Some(Delivery::Poll),
            "piggyback" => Some(Delivery::Piggyback),
            _ => None,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Delivery::Poll => 1,
            Delivery::Piggyback => 2,
            Delivery::Push => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Delivery> {
        match code {
            1 => Some(Delivery::Poll),
            2 => Some(Delivery::Piggyback),
            3 => Some(Delivery::Push),
            _ => None,
        }
    }
}

/// A command's state, as its results say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Sent,
    Done,
    Failed,
    Expired,
    Rejected,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Rejected => "rejected",
        }
    }

    /// The journal's code for a final state.
    pub fn code(self) -> u8 {
        match self {
            Status::Queued => 0,
            Status::Sent => 1,
            Status::Done => 2,
            Status::Failed => 3,
            Status::Expired => 4,
            Status::Rejected => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Status> {
        Some(match code {
            0 => Status::Queued,
            1 => Status::Sent,
            2 => Status::Done,
            3 => Status::Failed,
            4 => Status::Expired,
            5 => Status::Rejected,
            _ => return None,
        })
    }
}
