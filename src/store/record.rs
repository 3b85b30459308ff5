//! The on-disk encoding of one queued message.
//!
//! Hand-written because it is tiny and must stay readable by every future
//! version of the daemon (a queue survives package upgrades): the first byte
//! is the record version, and a newer daemon must keep decoding version 1.
//!
//! Layout of version 1, all integers big-endian:
//! `1 | flags (bit 0: QoS 1, bit 1: retain) | received_ms: u64 | topic_len: u16 | topic | payload`

use crate::message::{Message, Qos};

const VERSION_1: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 2;
const FLAG_QOS1: u8 = 0b01;
const FLAG_RETAIN: u8 = 0b10;

/// A message as it sits in the queue, with the time the gateway received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub message: Message,
    /// Milliseconds since the Unix epoch when the device was answered.
    pub received_ms: u64,
}

/// A stored value that this version cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("record version {0} is newer than this daemon understands")]
    UnknownVersion(u8),
    #[error("topic is not UTF-8")]
    TopicNotUtf8,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let topic = self.message.topic.as_bytes();
        // Topics longer than u16 never get here: routes refuse them.
        let topic_len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
        let topic = &topic[..usize::from(topic_len)];
        let mut flags = 0;
        if self.message.qos == Qos::AtLeastOnce {
            flags |= FLAG_QOS1;
        }
        if self.message.retain {
            flags |= FLAG_RETAIN;
        }
        let mut out = Vec::with_capacity(HEADER + topic.len() + self.message.payload.len());
        out.push(VERSION_1);
        out.push(flags);
        out.extend_from_slice(&self.received_ms.to_be_bytes());
        out.extend_from_slice(&topic_len.to_be_bytes());
        out.extend_from_slice(topic);
        out.extend_from_slice(&self.message.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() < HEADER {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        if bytes[0] != VERSION_1 {
            return Err(DecodeError::UnknownVersion(bytes[0]));
        }
        let flags = bytes[1];
        let mut ms = [0u8; 8];
        ms.copy_from_slice(&bytes[2..10]);
        let topic_len = usize::from(u16::from_be_bytes([bytes[10], bytes[11]]));
        let rest = &bytes[HEADER..];
        if rest.len() < topic_len {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        let (topic, payload) = rest.split_at(topic_len);
        let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::TopicNotUtf8)?;
        Ok(Record {
            message: Message {
                topic: topic.to_string(),
                payload: payload.to_vec(),
                qos: if flags & FLAG_QOS1 != 0 {
                    Qos::AtLeastOnce
                } else {
                    Qos::AtMostOnce
                },
                retain: flags & FLAG_RETAIN != 0,
            },
            received_ms: u64::from_be_bytes(ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(qos: Qos, retain: bool) -> Record {
        Record {
            message: Message {
                topic: "site/gw/d1/temp".into(),
                payload: vec![0, 1, 2, 255],
                qos,
                retain,
            },
            received_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn round_trips_every_flag_combination() {
        for qos in [Qos::AtMostOnce, Qos::AtLeastOnce] {
            for retain in [false, true] {
                let r = record(qos, retain);
                assert_eq!(Record::decode(&r.encode()), Ok(r));
            }
        }
    }

    #[test]
    fn version_1_layout_is_stable() {
        let bytes = record(Qos::AtLeastOnce, true).encode();
        assert_eq!(&bytes[..2], &[1, 0b11]);
        assert_eq!(&bytes[10..12], &[0, 15]);
        assert_eq!(&bytes[12..27], b"site/gw/d1/temp");
        assert_eq!(&bytes[27..], &[0, 1, 2, 255]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = record(Qos::AtLeastOnce, false).encode();
        for len in 0..27 {
            assert!(Record::decode(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn a_newer_version_is_refused() {
        let mut bytes = record(Qos::AtLeastOnce, false).encode();
        bytes[0] = 2;
        assert_eq!(Record::decode(&bytes), Err(DecodeError::UnknownVersion(2)));
    }
}
