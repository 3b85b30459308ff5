//! The devices the gateway has heard from: who, from where, when, how much
//! was stored for them and what was refused, for `GET /devices`,
//! `coap2mqtt devices` and the status page.
//!
//! A device is named, in this order, by its DTLS identity, by the `{device}`
//! capture of the route that took its request, or else by its address: a
//! request no route took, or one a route's access control refused (4.03),
//! is not listed under a name it merely claimed. The table is bounded
//! (`admin.max_devices`): when it is full the device heard from least
//! recently gives way (an LRU, from the `lru` crate), so a flood of spoofed
//! sources costs at most the bound and pushes out only devices quieter than
//! itself. Per-device figures stay here, out of /metrics, where one label
//! per device would grow the exposition without bound; /metrics gets the
//! count of devices heard from in the last 5 minutes and the last hour.
//!
//! The exchange reports what it decided as [`Sighting`]s (no I/O there);
//! the server shells of all listeners record them in one shared table.

use crate::coap::exchange::Peer;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// The default of `admin.max_devices`.
pub const DEFAULT_MAX_DEVICES: usize = 10_000;

/// One thing a device did, as the exchange saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub peer: Peer,
    /// The route's `{device}` capture, when the request matched a route
    /// that has one.
    pub device: Option<Box<str>>,
    pub event: Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Messages stored for it (a split SenML pack: several), and their
    /// payload bytes.
    Stored { messages: u32, bytes: u64 },
    /// A request answered with an error code ("4.03", "5.03", ...).
    Refused { code: (u8, u8) },
}

impl Sighting {
    /// The name the device is listed under (borrowed when it has one: the
    /// table is told of every request, and looks it up without allocating).
    pub fn name(&self) -> Cow<'_, str> {
        match (&self.peer.identity, &self.device) {
            (Some(identity), _) => Cow::Borrowed(identity),
            (None, Some(device)) => Cow::Borrowed(device),
            (None, None) => Cow::Owned(self.peer.addr.to_string()),
        }
    }
}

/// What the table knows of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    /// The DTLS identity it authenticated with, if any.
    pub identity: Option<String>,
    pub last_address: SocketAddr,
    /// Milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub messages_stored: u64,
    pub bytes_stored: u64,
    /// Requests refused, by response code ("4.03": 2).
    pub refusals: BTreeMap<String, u64>,
    /// Commands waiting in its mailbox (with command tables only; filled
    /// in when the table is listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_commands: Option<usize>,
}

impl Device {
    /// Counts what it did.
    fn saw(&mut self, sighting: &Sighting, now_ms: u64) {
        self.last_address = sighting.peer.addr;
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        match sighting.event {
            Event::Stored { messages, bytes } => {
                self.messages_stored += u64::from(messages);
                self.bytes_stored += bytes;
            }
            Event::Refused {
                code: (class, detail),
            } => {
                *self
                    .refusals
                    .entry(format!("{class}.{detail:02}"))
                    .or_default() += 1;
            }
        }
    }
}

/// The bounded table; see the module doc.
pub struct DeviceTable {
    devices: lru::LruCache<String, Device>,
    evicted: u64,
}

impl DeviceTable {
    pub fn new(capacity: usize) -> DeviceTable {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        DeviceTable {
            devices: lru::LruCache::new(capacity),
            evicted: 0,
        }
    }

    /// Records one sighting at `now_ms`.
    pub fn record(&mut self, sighting: &Sighting, now_ms: u64) {
        let name = sighting.name();
        // get_mut also makes it the most recently used.
        if let Some(device) = self.devices.get_mut(name.as_ref()) {
            device.saw(sighting, now_ms);
            return;
        }
        let mut fresh = Device {
            name: name.to_string(),
            identity: sighting.peer.identity.as_deref().map(str::to_string),
            last_address: sighting.peer.addr,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            messages_stored: 0,
            bytes_stored: 0,
            refusals: BTreeMap::new(),
            pending_commands: None,
        };
        fresh.saw(sighting, now_ms);
        if self.devices.push(name.into_owned(), fresh).is_some() {
            self.evicted += 1;
        }
    }

    /// True when the device is in the table (does not count as a use).
    pub fn knows(&self, name: &str) -> bool {
        self.devices.contains(name)
    }

    /// `admin.max_devices`.
    pub fn capacity(&self) -> usize {
        self.devices.cap().get()
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Devices pushed out by newer ones since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// How many were heard from at or after `since_ms`.
    pub fn heard_since(&self, since_ms: u64) -> usize {
        self.devices
            .iter()
            .filter(|(_, d)| d.last_seen_ms >= since_ms)
            .count()
    }

    /// Every device, the most recently heard from first.
    pub fn list(&self) -> Vec<Device> {
        self.devices.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// The table as the listeners and the admin endpoint share it.
pub type SharedDevices = Arc<Mutex<DeviceTable>>;

pub fn shared(capacity: usize) -> SharedDevices {
    Arc::new(Mutex::new(DeviceTable::new(capacity)))
}

/// `GET /devices` as JSON, and what `coap2mqtt devices` reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// When the table was read, in milliseconds since the Unix epoch.
    pub now_ms: u64,
    pub capacity: usize,
    pub evicted: u64,
    /// The most recently heard from first.
    pub devices: Vec<Device>,
}

impl Listing {
    pub fn of(table: &DeviceTable, now_ms: u64) -> Listing {
        Listing {
            now_ms,
            capacity: table.capacity(),
            evicted: table.evicted(),
            devices: table.list(),
        }
    }

    pub fn parse(json: &str) -> Result<Listing, serde_json::Error> {
        serde_json::from_str(json)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// Only the devices not heard from for at least `quiet`.
    pub fn quiet_for(mut self, quiet: std::time::Duration) -> Listing {
        let before = self.now_ms.saturating_sub(quiet.as_millis() as u64);
        self.devices.retain(|d| d.last_seen_ms <= before);
        self
    }

    /// A table for people: one line per device, the quietest last.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<24} {:<22} {:>10} {:>10} {:>12} {:>9}  {}\n",
            "DEVICE", "LAST ADDRESS", "LAST SEEN", "MESSAGES", "BYTES", "COMMANDS", "REFUSED"
        );
        for d in &self.devices {
            let refused = d
                .refusals
                .iter()
                .map(|(code, n)| format!("{code}:{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!(
                "{:<24} {:<22} {:>10} {:>10} {:>12} {:>9}  {}\n",
                d.name,
                d.last_address.to_string(),
                ago(self.now_ms.saturating_sub(d.last_seen_ms)),
                d.messages_stored,
                d.bytes_stored,
                d.pending_commands
                    .map_or("-".to_string(), |n| n.to_string()),
                if refused.is_empty() {
                    "-".into()
                } else {
                    refused
                },
            ));
        }
        out.push_str(&format!(
            "{} device(s) listed; the table keeps {} (admin.max_devices), {} pushed out since start\n",
            self.devices.len(),
            self.capacity,
            self.evicted
        ));
        out
    }
}

/// "12s ago", "5m ago", "3h ago", "2d ago".
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7_199 => format!("{}m ago", s / 60),
        7_200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str, identity: Option<&str>) -> Peer {
        Peer {
            addr: addr.parse().expect("addr"),
            identity: identity.map(Arc::from),
        }
    }

    fn stored(addr: &str, device: Option<&str>, bytes: u64) -> Sighting {
        Sighting {
            peer: peer(addr, None),
            device: device.map(Box::from),
            event: Event::Stored { messages: 1, bytes },
        }
    }

    #[test]
    fn a_device_is_named_by_identity_then_capture_then_address() {
        let mut s = stored("10.0.0.1:5683", Some("kitchen"), 3);
        assert_eq!(s.name(), "kitchen");
        s.peer.identity = Some(Arc::from("sensor-01"));
        assert_eq!(s.name(), "sensor-01");
        assert_eq!(stored("10.0.0.1:5683", None, 3).name(), "10.0.0.1:5683");
    }

    #[test]
    fn figures_add_up_and_the_last_address_follows_the_device() {
        let mut table = DeviceTable::new(10);
        table.record(&stored("10.0.0.1:5683", Some("a"), 10), 1_000);
        table.record(&stored("10.0.0.9:40000", Some("a"), 5), 2_000);
        table.record(
            &Sighting {
                peer: peer("10.0.0.9:40000", None),
                device: Some("a".into()),
                event: Event::Refused { code: (4, 13) },
            },
            3_000,
        );
        let a = &table.list()[0];
        assert_eq!(
            (
                a.messages_stored,
                a.bytes_stored,
                a.first_seen_ms,
                a.last_seen_ms
            ),
            (2, 15, 1_000, 3_000)
        );
        assert_eq!(
            a.last_address,
            "10.0.0.9:40000".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(a.refusals.get("4.13"), Some(&1));
    }

    #[test]
    fn a_full_table_gives_way_to_the_device_heard_from_least_recently() {
        let mut table = DeviceTable::new(2);
        table.record(&stored("10.0.0.1:1", Some("a"), 1), 1);
        table.record(&stored("10.0.0.2:1", Some("b"), 1), 2);
        // a is heard from again: b is now the quietest.
        table.record(&stored("10.0.0.1:1", Some("a"), 1), 3);
        table.record(&stored("10.0.0.3:1", Some("c"), 1), 4);
        let names: Vec<String> = table.list().into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["c", "a"]);
        assert_eq!((table.len(), table.evicted()), (2, 1));
    }

    #[test]
    fn heard_since_counts_by_last_seen() {
        let mut table = DeviceTable::new(10);
        table.record(&stored("10.0.0.1:1", Some("a"), 1), 100);
        table.record(&stored("10.0.0.2:1", Some("b"), 1), 200);
        assert_eq!(table.heard_since(150), 1);
        assert_eq!(table.heard_since(0), 2);
    }

    #[test]
    fn the_listing_is_json_with_every_field_and_reads_back() {
        let mut table = DeviceTable::new(10);
        table.record(&stored("10.0.0.1:1", Some("a\"b"), 1), 100);
        let listing = Listing::of(&table, 150);
        let json = listing.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["devices"][0]["name"], "a\"b");
        assert_eq!(value["devices"][0]["messages_stored"], 1);
        assert_eq!(value["capacity"], 10);
        assert_eq!(Listing::parse(&json).expect("parses"), listing);
    }

    #[test]
    fn quiet_for_keeps_the_devices_silent_at_least_that_long() {
        let mut table = DeviceTable::new(10);
        table.record(&stored("10.0.0.1:1", Some("old"), 1), 1_000);
        table.record(&stored("10.0.0.2:1", Some("new"), 1), 3_600_000);
        let listing =
            Listing::of(&table, 3_700_000).quiet_for(std::time::Duration::from_secs(3_600));
        let names: Vec<&str> = listing.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["old"]);
        assert!(listing.render().contains("old"), "{}", listing.render());
        assert!(listing.render().contains("61m ago"), "{}", listing.render());
    }
}
