//! The unit that flows from a device to the broker.
//!
//! A [`Message`] is what the CoAP exchange decides to keep: the MQTT topic it
//! resolved from a route, the payload exactly as the device sent it (after
//! block-wise reassembly), and how the uplink must publish it. It is created
//! once, stored once, and published (possibly more than once) from the store.

/// MQTT delivery level for one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qos {
    /// Published once; leaves the queue when written to the socket.
    AtMostOnce,
    /// Published until the broker's PUBACK; leaves the queue only then.
    AtLeastOnce,
}

impl Qos {
    /// The MQTT wire value (0 or 1).
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }

    /// Parses the MQTT wire value; only 0 and 1 are supported.
    pub fn from_level(level: u8) -> Option<Qos> {
        match level {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            _ => None,
        }
    }
}

/// One device message on its way to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: Qos,
    pub retain: bool,
    /// Where it came from and what the route asked of it; carried to the
    /// broker as MQTT 5 properties.
    pub meta: Meta,
}

/// What a message carries besides its topic and payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The request's Uri-Path, as received (`sensors/kitchen/t`).
    pub coap_path: String,
    /// The device's DTLS identity, if it has one.
    pub identity: Option<std::sync::Arc<str>>,
    /// The request's Content-Format number, if it had one.
    pub content_format: Option<u16>,
    /// The route's `expiry_s`: the message is worth nothing after that long.
    pub expiry_s: Option<u32>,
    /// The payload is the gateway's JSON translation of what the device
    /// sent (`payload = "json"`); `content_format` stays the device's.
    pub translated: bool,
    /// MQTT 5 Correlation Data to publish with (a command's result echoes
    /// the command's).
    pub correlation: Option<Vec<u8>>,
}
