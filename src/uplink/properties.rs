//! What an MQTT 5 publish says about its message, and what that costs in
//! bytes.
//!
//! Every message goes out with user properties that let a consumer tell
//! where it came from and de-duplicate the redeliveries at-least-once
//! allows: `gateway` and `seq` together name a message across reconnects
//! and restarts. The Content Type follows the CoAP Content-Format, the
//! Payload Format Indicator says when the payload is UTF-8, and a route's
//! `expiry_s` becomes the Message Expiry (what is left of it).
//!
//! The sizes are computed here too, because the exchange refuses (4.13) a
//! request whose PUBLISH would not fit `mqtt.max_packet_size` while the
//! device is still listening, and with MQTT 5 the properties count.

use crate::message::{Message, Meta};

/// The widest a `seq` property value gets (u64 in decimal).
const SEQ_WIDTH: usize = 20;
/// `received_at`, RFC 3339 UTC with milliseconds: `2026-12-06T10:09:58.123Z`.
const RECEIVED_AT_WIDTH: usize = 24;

/// The MQTT Content Type of a CoAP Content-Format number.
pub fn content_type(format: Option<u16>) -> &'static str {
    match format {
        Some(0) => "text/plain;charset=utf-8",
        Some(50) => "application/json",
        Some(60) => "application/cbor",
        Some(110) => "application/senml+json",
        Some(112) => "application/senml+cbor",
        _ => "application/octet-stream",
    }
}

/// The Content Type a message goes out with: its Content-Format's, or JSON
/// when the gateway translated it (`payload = "json"`).
pub fn message_content_type(meta: &Meta) -> &'static str {
    match meta.translated {
        true => "application/json",
        false => content_type(meta.content_format),
    }
}

/// The user properties of a message, in the order they are sent.
pub fn user_properties(
    gateway: &str,
    meta: &Meta,
    seq: u64,
    received_ms: u64,
) -> Vec<(String, String)> {
    let mut props = Vec::with_capacity(6);
    props.push(("gateway".to_string(), gateway.to_string()));
    props.push(("coap_path".to_string(), meta.coap_path.clone()));
    if let Some(identity) = &meta.identity {
        props.push(("identity".to_string(), identity.to_string()));
    }
    if let Some(format) = meta.content_format {
        props.push(("content_format".to_string(), format.to_string()));
    }
    props.push(("seq".to_string(), seq.to_string()));
    props.push(("received_at".to_string(), rfc3339_ms(received_ms)));
    props
}

/// What is left of a route's `expiry_s` after the message waited `age_ms`
/// (at least a second, since 0 would mean "no expiry").
pub fn remaining_expiry(expiry_s: Option<u32>, age_ms: u64) -> Option<u32> {
    let expiry = u64::from(expiry_s?);
    let left = expiry.saturating_sub(age_ms / 1000);
    Some(left.max(1) as u32)
}

/// Bytes of the MQTT 3.1.1 PUBLISH (QoS 1, so with a packet id).
pub fn packet_size_v311(message: &Message) -> usize {
    with_fixed_header(2 + message.topic.len() + 2 + message.payload.len())
}

/// Bytes of the MQTT 5 PUBLISH with every property this gateway adds, at
/// their widest (the sequence number and time not known yet).
pub fn packet_size_v5(message: &Message, gateway: &str) -> usize {
    let meta = &message.meta;
    let pair = |key: &str, value: usize| 1 + 2 + key.len() + 2 + value;
    let mut properties = pair("gateway", gateway.len())
        + pair("coap_path", meta.coap_path.len())
        + pair("seq", SEQ_WIDTH)
        + pair("received_at", RECEIVED_AT_WIDTH)
        // Content Type and Payload Format Indicator.
        + 1 + 2 + message_content_type(meta).len()
        + 2;
    if let Some(identity) = &meta.identity {
        properties += pair("identity", identity.len());
    }
    if let Some(format) = meta.content_format {
        properties += pair("content_format", format.to_string().len());
    }
    if meta.expiry_s.is_some() {
        properties += 5;
    }
    if let Some(correlation) = &meta.correlation {
        properties += 1 + 2 + correlation.len();
    }
    let variable = 2 + message.topic.len() + 2 + varint_len(properties) + properties;
    with_fixed_header(variable + message.payload.len())
}

/// The larger of the two: what a message may need whichever version the
/// connection speaks (`auto` learns that only when it connects).
pub fn packet_size(message: &Message, gateway: &str) -> usize {
    packet_size_v311(message).max(packet_size_v5(message, gateway))
}

fn with_fixed_header(remaining: usize) -> usize {
    1 + varint_len(remaining) + remaining
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// `2026-12-06T10:09:58.123Z` for milliseconds since the Unix epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Year, month, day of a day count since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's well-known algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Qos;

    fn message(meta: Meta) -> Message {
        Message {
            topic: "site/gw/d1/t".into(),
            payload: b"21.5".to_vec(),
            qos: Qos::AtLeastOnce,
            retain: false,
            meta,
        }
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(rfc3339_ms(1_796_551_798_123), "2026-12-06T10:09:58.123Z");
    }

    #[test]
    fn content_types_follow_the_content_format() {
        assert_eq!(content_type(Some(50)), "application/json");
        assert_eq!(content_type(Some(112)), "application/senml+cbor");
        assert_eq!(content_type(Some(42)), "application/octet-stream");
        assert_eq!(content_type(None), "application/octet-stream");
        let translated = Meta {
            content_format: Some(112),
            translated: true,
            ..Meta::default()
        };
        assert_eq!(message_content_type(&translated), "application/json");
        let raw = Meta {
            translated: false,
            ..translated
        };
        assert_eq!(message_content_type(&raw), "application/senml+cbor");
    }

    #[test]
    fn user_properties_name_the_gateway_path_identity_format_seq_and_time() {
        let meta = Meta {
            coap_path: "sensors/d1/t".into(),
            identity: Some("sensor-01".into()),
            translated: false,
            correlation: None,
            content_format: Some(0),
            expiry_s: None,
        };
        let props = user_properties("gw1", &meta, 42, 0);
        let keys: Vec<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "gateway",
                "coap_path",
                "identity",
                "content_format",
                "seq",
                "received_at"
            ]
        );
        assert_eq!(props[4].1, "42");
        assert_eq!(props[5].1, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn what_is_left_of_the_expiry_is_at_least_a_second() {
        assert_eq!(remaining_expiry(Some(60), 15_500), Some(45));
        assert_eq!(remaining_expiry(Some(60), 90_000), Some(1));
        assert_eq!(remaining_expiry(None, 0), None);
    }

    #[test]
    fn the_v5_size_counts_the_properties_and_is_never_below_the_v311_one() {
        let plain = message(Meta::default());
        assert_eq!(packet_size_v311(&plain), 1 + 1 + 2 + 12 + 2 + 4);
        let rich = message(Meta {
            coap_path: "sensors/d1/t".into(),
            identity: Some("sensor-01".into()),
            translated: false,
            content_format: Some(60),
            expiry_s: Some(10),
            correlation: None,
        });
        let v5 = packet_size_v5(&rich, "gw1");
        assert!(v5 > packet_size_v311(&rich) + 100, "{v5}");
        assert_eq!(packet_size(&rich, "gw1"), v5);
    }
}
