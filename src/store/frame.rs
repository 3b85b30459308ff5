//! The queue's on-disk format: frames in segment files.
//!
//! A segment file starts with a 16-byte header (magic, format version) and
//! holds frames back to back. Every frame is `kind: u8 | len: u32 | crc: u32
//! | body`, the CRC (CRC-32, IEEE) covering the kind, the length and the
//! body, so a torn or damaged frame is recognised and never half-read.
//! Integers are big-endian; lengths inside bodies are LEB128 varints.
//!
//! Kinds:
//! - **batch**: one commit batch, the unit of durability: the messages the
//!   committer made durable together, with consecutive sequence numbers.
//!   `first_seq: u64 | base_ms: u64 | count: u32 | count x message`, where a
//!   message is `flags: u8 | received_ms - base_ms: varint | topic |
//!   payload | [recall] | [properties]` (each `len: varint | bytes`).
//!   Flags: bit 0 QoS 1, bit 1 retain, bit 2 a recall follows, bit 3
//!   properties follow (tag-length-value: 1 the CoAP path, 2 the DTLS
//!   identity, 3 the Content-Format, 4 the route's expiry; unknown tags
//!   skipped, so a later version can add some without a new format).
//! - **ack**: how far the broker has taken the queue, written with the next
//!   commit (never alone on the hot path): `watermark: u64 | n: varint | n x
//!   varint`, every sequence number below the watermark and the n listed
//!   above it (deltas from the previous) are retired. Losing one only means
//!   a duplicate after a crash.
//! - **dead letter** (in the dead-letter file): `seq: u64 | dead_ms: u64 |
//!   reason | message` (a message as in a batch, with `received_ms` whole).
//! - **forget** (dead-letter file): `n: varint | n x seq: u64`, dead letters
//!   removed by an operator.
//! - **padding**: zeros up to the next page boundary after a commit, so
//!   that the next commit starts on a fresh page (see `log.rs`). Readers
//!   skip it like any kind they do not know, so 0.2.0 reads it too.
//!
//! Hand-written because it is small, must be read by every later version of
//! the daemon (a queue survives upgrades), and no crate offers this framing
//! with these durability rules; every decoder returns an error for any
//! input, never panics (fuzzed: `fuzz/fuzz_targets/frame.rs`).

use crate::message::{Message, Meta, Qos};

/// Segment and dead-letter files start with this, then the format version.
pub const MAGIC: &[u8; 8] = b"c2mqlog\0";
/// The format this daemon writes (1 was the sled store).
pub const FORMAT: u32 = 2;
pub const FILE_HEADER: usize = 16;
/// kind + len + crc.
pub const FRAME_HEADER: usize = 9;
/// A frame larger than this is damage, not data (the largest message is a
/// few MiB; a batch holds at most `commit_max_batch` of them).
pub const MAX_FRAME: usize = 1 << 30;

pub const KIND_BATCH: u8 = 1;
pub const KIND_ACK: u8 = 2;
pub const KIND_DEAD: u8 = 3;
pub const KIND_FORGET: u8 = 4;
pub const KIND_PADDING: u8 = 5;
/// The page size padding aligns to: the kernel's, on every target we build.
pub const PAGE: u64 = 4096;

const FLAG_QOS1: u8 = 1;
const FLAG_RETAIN: u8 = 2;
const FLAG_RECALL: u8 = 4;
const FLAG_PROPERTIES: u8 = 8;

/// A message as the queue keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub message: Message,
    /// When the device was answered, in ms since the Unix epoch.
    pub received_ms: u64,
    /// What deduplication needs after a restart (opaque here); may be empty.
    pub recall: Vec<u8>,
}

/// Why bytes are not a frame this version can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("checksum mismatch")]
    Checksum,
    #[error("frame of {0} bytes is larger than any the daemon writes")]
    TooLarge(u64),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("not a queue file (bad magic)")]
    BadMagic,
    #[error("queue file format {0}, newer than this daemon reads ({FORMAT})")]
    NewerFormat(u32),
    #[error("a topic that is not UTF-8")]
    TopicNotUtf8,
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// The 16-byte header of a segment or dead-letter file.
pub fn file_header() -> [u8; FILE_HEADER] {
    let mut h = [0u8; FILE_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_be_bytes());
    h
}

/// Checks a file header; the error says why it is not ours.
pub fn check_file_header(bytes: &[u8]) -> Result<(), FrameError> {
    if bytes.len() < FILE_HEADER {
        return Err(FrameError::Truncated("file header"));
    }
    if &bytes[..8] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let version = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version > FORMAT {
        return Err(FrameError::NewerFormat(version));
    }
    Ok(())
}

/// Wraps `body` in a frame of `kind`, appending it to `out`.
pub fn frame(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    let len = body.len() as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(&len.to_be_bytes());
    crc.update(body);
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.extend_from_slice(body);
}

/// Appends a padding frame to `out` (whose first byte lies at `start` in
/// the file) so that it ends on a page boundary, when that wastes no more
/// bytes than `out` already holds: the page holding the end of a commit is
/// written anyway, and a commit that starts on a fresh page dirties one
/// page fewer than one that starts in the last commit's page, which was
/// clean since its sync. Small commits (one message at a quiet time) share
/// pages and pad nothing, so the disk holds at most twice the data.
pub fn pad_to_page(start: u64, out: &mut Vec<u8>) {
    let end = start + out.len() as u64;
    let mut padding = (PAGE - end % PAGE) % PAGE;
    // The padding frame needs its header: when that does not fit in what
    // is left of this page, it fills the next one too.
    if padding != 0 && padding < FRAME_HEADER as u64 {
        padding += PAGE;
    }
    if padding == 0 || padding > out.len() as u64 {
        return;
    }
    let zeros = vec![0u8; padding as usize - FRAME_HEADER];
    frame(KIND_PADDING, &zeros, out);
}

/// A frame's header read from the start of `bytes`: (kind, body length).
/// The CRC is checked by [`open_frame`], which needs the body.
pub fn read_header(bytes: &[u8]) -> Result<(u8, usize, u32), FrameError> {
    let header = bytes
        .get(..FRAME_HEADER)
        .ok_or(FrameError::Truncated("frame header"))?;
    let kind = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let crc = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    if len as usize > MAX_FRAME {
        return Err(FrameError::TooLarge(u64::from(len)));
    }
    Ok((kind, len as usize, crc))
}

/// Checks the CRC of a frame whose header is `(kind, len, crc)` and whose
/// body is `body`.
pub fn check_body(kind: u8, crc: u32, body: &[u8]) -> Result<(), FrameError> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(&(body.len() as u32).to_be_bytes());
    hasher.update(body);
    match hasher.finalize() == crc {
        true => Ok(()),
        false => Err(FrameError::Checksum),
    }
}

/// The first frame of `bytes`, checked: (kind, body, bytes it took).
pub fn open_frame(bytes: &[u8]) -> Result<(u8, &[u8], usize), FrameError> {
    let (kind, len, crc) = read_header(bytes)?;
    let body = bytes
        .get(FRAME_HEADER..FRAME_HEADER + len)
        .ok_or(FrameError::Truncated("frame body"))?;
    check_body(kind, crc, body)?;
    Ok((kind, body, FRAME_HEADER + len))
}

/// The body of a batch frame holding `messages` from `first_seq` on.
pub fn batch_body(first_seq: u64, messages: &[Stored]) -> Vec<u8> {
    let base_ms = messages.iter().map(|m| m.received_ms).min().unwrap_or(0);
    let size: usize = messages
        .iter()
        .map(|m| 16 + m.message.topic.len() + m.message.payload.len() + m.recall.len())
        .sum();
    let mut out = Vec::with_capacity(20 + size);
    out.extend_from_slice(&first_seq.to_be_bytes());
    out.extend_from_slice(&base_ms.to_be_bytes());
    out.extend_from_slice(&(messages.len() as u32).to_be_bytes());
    for m in messages {
        put_message(&mut out, m, m.received_ms - base_ms);
    }
    out
}

fn put_message(out: &mut Vec<u8>, m: &Stored, time: u64) {
    let mut flags = 0;
    if m.message.qos == Qos::AtLeastOnce {
        flags |= FLAG_QOS1;
    }
    if m.message.retain {
        flags |= FLAG_RETAIN;
    }
    if !m.recall.is_empty() {
        flags |= FLAG_RECALL;
    }
    let properties = encode_meta(&m.message.meta, &m.message.topic);
    if !properties.is_empty() {
        flags |= FLAG_PROPERTIES;
    }
    out.push(flags);
    put_varint(out, time);
    put_bytes(out, m.message.topic.as_bytes());
    put_bytes(out, &m.message.payload);
    if !m.recall.is_empty() {
        put_bytes(out, &m.recall);
    }
    if !properties.is_empty() {
        put_bytes(out, &properties);
    }
}

/// Tags of the message properties (tag, varint length, value; a reader
/// skips tags it does not know).
const TAG_COAP_PATH: u8 = 1;
const TAG_IDENTITY: u8 = 2;
const TAG_CONTENT_FORMAT: u8 = 3;
const TAG_EXPIRY: u8 = 4;
/// Present (empty) when the payload is the gateway's JSON translation.
const TAG_TRANSLATED: u8 = 5;
/// MQTT 5 Correlation Data, raw bytes.
const TAG_CORRELATION: u8 = 6;
/// Present (empty) instead of `TAG_COAP_PATH` when the path is the topic,
/// as it often is (`resource = "s/{device}"`, `topic = "s/{device}"`): the
/// bytes of every message count, on disk and in flash writes.
const TAG_PATH_IS_TOPIC: u8 = 7;

fn encode_meta(meta: &Meta, topic: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |tag: u8, value: &[u8]| {
        out.push(tag);
        put_bytes(&mut out, value);
    };
    if meta.coap_path == topic && !topic.is_empty() {
        put(TAG_PATH_IS_TOPIC, &[]);
    } else if !meta.coap_path.is_empty() {
        put(TAG_COAP_PATH, meta.coap_path.as_bytes());
    }
    if let Some(identity) = &meta.identity {
        put(TAG_IDENTITY, identity.as_bytes());
    }
    if let Some(format) = meta.content_format {
        put(TAG_CONTENT_FORMAT, &format.to_be_bytes());
    }
    if let Some(expiry) = meta.expiry_s {
        put(TAG_EXPIRY, &expiry.to_be_bytes());
    }
    if meta.translated {
        put(TAG_TRANSLATED, &[]);
    }
    if let Some(correlation) = &meta.correlation {
        put(TAG_CORRELATION, correlation);
    }
    out
}

fn decode_meta(bytes: &[u8], topic: &str) -> Result<Meta, FrameError> {
    let mut r = Reader(bytes);
    let mut meta = Meta::default();
    while !r.0.is_empty() {
        let tag = r.u8()?;
        let value = r.bytes()?;
        let text =
            || std::str::from_utf8(value).map_err(|_| FrameError::Malformed("property text"));
        match tag {
            TAG_COAP_PATH => meta.coap_path = text()?.to_string(),
            TAG_IDENTITY => meta.identity = Some(std::sync::Arc::from(text()?)),
            TAG_CONTENT_FORMAT => {
                let v: [u8; 2] = value
                    .try_into()
                    .map_err(|_| FrameError::Malformed("content format"))?;
                meta.content_format = Some(u16::from_be_bytes(v));
            }
            TAG_EXPIRY => {
                let v: [u8; 4] = value
                    .try_into()
                    .map_err(|_| FrameError::Malformed("expiry"))?;
                meta.expiry_s = Some(u32::from_be_bytes(v));
            }
            TAG_TRANSLATED => meta.translated = true,
            TAG_CORRELATION => meta.correlation = Some(value.to_vec()),
            TAG_PATH_IS_TOPIC => meta.coap_path = topic.to_string(),
            _ => {}
        }
    }
    Ok(meta)
}

/// A batch frame's body, decoded lazily: the header now, the messages as
/// they are iterated.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    pub first_seq: u64,
    pub base_ms: u64,
    pub count: u32,
    messages: &'a [u8],
}

impl<'a> Batch<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Batch<'a>, FrameError> {
        let mut r = Reader(body);
        let first_seq = r.u64()?;
        let base_ms = r.u64()?;
        let count = r.u32()?;
        Ok(Batch {
            first_seq,
            base_ms,
            count,
            messages: r.0,
        })
    }

    /// The sequence number after this batch's last.
    pub fn end_seq(&self) -> u64 {
        self.first_seq.saturating_add(u64::from(self.count))
    }

    /// Each message with its sequence number, in order; an error ends the
    /// iteration (the rest of the frame cannot be found).
    pub fn messages(&self) -> impl Iterator<Item = Result<(u64, Stored), FrameError>> + 'a {
        let mut r = Reader(self.messages);
        let (first, base, count) = (self.first_seq, self.base_ms, u64::from(self.count));
        let mut i = 0u64;
        std::iter::from_fn(move || {
            if i >= count {
                return None;
            }
            let seq = first.saturating_add(i);
            i += 1;
            let item = read_message(&mut r, Some(base)).map(|m| (seq, m));
            if item.is_err() {
                i = count;
            }
            Some(item)
        })
    }
}

/// One message; `base` is the batch's time base, `None` when the time is
/// stored whole (dead letters).
fn read_message(r: &mut Reader<'_>, base: Option<u64>) -> Result<Stored, FrameError> {
    let flags = r.u8()?;
    let received_ms = match base {
        Some(base) => base.saturating_add(r.varint()?),
        None => r.u64()?,
    };
    let topic = std::str::from_utf8(r.bytes()?)
        .map_err(|_| FrameError::TopicNotUtf8)?
        .to_string();
    let payload = r.bytes()?.to_vec();
    let recall = match flags & FLAG_RECALL != 0 {
        true => r.bytes()?.to_vec(),
        false => Vec::new(),
    };
    let meta = match flags & FLAG_PROPERTIES != 0 {
        true => decode_meta(r.bytes()?, &topic)?,
        false => Meta::default(),
    };
    Ok(Stored {
        message: Message {
            topic,
            payload,
            qos: match flags & FLAG_QOS1 != 0 {
                true => Qos::AtLeastOnce,
                false => Qos::AtMostOnce,
            },
            retain: flags & FLAG_RETAIN != 0,
            meta,
        },
        received_ms,
        recall,
    })
}

/// What an ack frame says: everything below `watermark` and each of
/// `above` is retired.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acks {
    pub watermark: u64,
    pub above: Vec<u64>,
}

impl Acks {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + 3 * self.above.len());
        out.extend_from_slice(&self.watermark.to_be_bytes());
        put_varint(&mut out, self.above.len() as u64);
        let mut previous = self.watermark;
        for &seq in &self.above {
            put_varint(&mut out, seq.saturating_sub(previous));
            previous = seq;
        }
        out
    }

    pub fn decode(body: &[u8]) -> Result<Acks, FrameError> {
        let mut r = Reader(body);
        let watermark = r.u64()?;
        let n = r.varint()?;
        // Each entry takes at least a byte: a count beyond that is damage.
        if n > r.0.len() as u64 {
            return Err(FrameError::Malformed("ack count"));
        }
        let mut above = Vec::with_capacity(n as usize);
        let mut previous = watermark;
        for _ in 0..n {
            previous = previous.saturating_add(r.varint()?);
            above.push(previous);
        }
        Ok(Acks { watermark, above })
    }
}

/// A dead letter as its file keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub seq: u64,
    pub dead_ms: u64,
    pub reason: String,
    pub stored: Stored,
}

impl DeadLetter {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.stored.message.payload.len());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.dead_ms.to_be_bytes());
        put_bytes(&mut out, self.reason.as_bytes());
        // The time whole: no batch base here.
        let mut message = Vec::new();
        put_message(&mut message, &self.stored, 0);
        // put_message wrote flags then a varint 0; replace the time.
        let flags = message[0];
        out.push(flags);
        out.extend_from_slice(&self.stored.received_ms.to_be_bytes());
        out.extend_from_slice(&message[2..]);
        out
    }

    pub fn decode(body: &[u8]) -> Result<DeadLetter, FrameError> {
        let mut r = Reader(body);
        let seq = r.u64()?;
        let dead_ms = r.u64()?;
        let reason = String::from_utf8_lossy(r.bytes()?).into_owned();
        let stored = read_message(&mut r, None)?;
        Ok(DeadLetter {
            seq,
            dead_ms,
            reason,
            stored,
        })
    }
}

/// The body of a forget frame.
pub fn forget_body(seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 8 * seqs.len());
    put_varint(&mut out, seqs.len() as u64);
    for seq in seqs {
        out.extend_from_slice(&seq.to_be_bytes());
    }
    out
}

pub fn decode_forget(body: &[u8]) -> Result<Vec<u64>, FrameError> {
    let mut r = Reader(body);
    let n = r.varint()?;
    if n > (r.0.len() / 8) as u64 {
        return Err(FrameError::Malformed("forget count"));
    }
    (0..n).map(|_| r.u64()).collect()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Truncated("field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn varint(&mut self) -> Result<u64, FrameError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(FrameError::Malformed("varint longer than 64 bits"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| FrameError::Malformed("length"))?;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(i: u64, recall: bool) -> Stored {
        Stored {
            message: Message {
                topic: format!("site/gw/d{i}/t"),
                payload: vec![i as u8; 32],
                qos: if i.is_multiple_of(2) {
                    Qos::AtLeastOnce
                } else {
                    Qos::AtMostOnce
                },
                retain: i.is_multiple_of(3),
                meta: Default::default(),
            },
            received_ms: 1_700_000_000_000 + i * 7,
            recall: if recall { vec![9; 20] } else { Vec::new() },
        }
    }

    #[test]
    fn a_batch_round_trips_with_its_sequence_numbers() {
        let messages: Vec<Stored> = (0..5).map(|i| stored(i, i != 2)).collect();
        let mut bytes = Vec::new();
        frame(KIND_BATCH, &batch_body(100, &messages), &mut bytes);
        let (kind, body, used) = open_frame(&bytes).expect("frame");
        assert_eq!((kind, used), (KIND_BATCH, bytes.len()));
        let batch = Batch::decode(body).expect("batch");
        assert_eq!(
            (batch.first_seq, batch.count, batch.end_seq()),
            (100, 5, 105)
        );
        let back: Vec<(u64, Stored)> = batch.messages().map(|m| m.expect("message")).collect();
        let expected: Vec<(u64, Stored)> = (100..).zip(messages).collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn a_message_s_origin_round_trips() {
        let mut messages: Vec<Stored> = (0..4).map(|i| stored(i, false)).collect();
        messages[1].message.meta = Meta {
            coap_path: "sensors/kitchen/t".into(),
            identity: Some("sensor-01".into()),
            content_format: Some(112),
            expiry_s: Some(3600),
            translated: true,
            correlation: Some(vec![0, 0xff, 7]),
        };
        messages[2].message.meta.content_format = Some(0);
        messages[3].message.meta.translated = true;
        // A path that is the topic is written as a mark, not twice.
        messages[0].message.meta.coap_path = messages[0].message.topic.clone();
        let marked = batch_body(7, &messages).len();
        messages[0].message.meta.coap_path.push('x');
        let mut bytes = Vec::new();
        frame(KIND_BATCH, &batch_body(7, &messages), &mut bytes);
        let path_len = messages[0].message.topic.len();
        assert_eq!(
            bytes.len() - FRAME_HEADER,
            marked + path_len + 1,
            "path written whole"
        );
        messages[0].message.meta.coap_path.pop();
        let mut bytes = Vec::new();
        frame(KIND_BATCH, &batch_body(7, &messages), &mut bytes);
        let (_, body, _) = open_frame(&bytes).expect("frame");
        let back: Vec<Stored> = Batch::decode(body)
            .expect("batch")
            .messages()
            .map(|m| m.expect("message").1)
            .collect();
        assert_eq!(back, messages);
    }

    #[test]
    fn a_typical_message_costs_its_topic_payload_and_recall_plus_five_bytes() {
        let m = stored(7, true);
        let alone = batch_body(0, std::slice::from_ref(&m)).len() - 20;
        assert_eq!(alone, m.message.topic.len() + 32 + 20 + 5);
    }

    #[test]
    fn any_flipped_bit_or_truncation_is_an_error() {
        let mut bytes = Vec::new();
        frame(KIND_BATCH, &batch_body(1, &[stored(1, true)]), &mut bytes);
        for len in 0..bytes.len() {
            assert!(open_frame(&bytes[..len]).is_err(), "len {len}");
        }
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(open_frame(&damaged).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn acks_round_trip() {
        let acks = Acks {
            watermark: 1_000,
            above: vec![1_002, 1_003, 5_000_000],
        };
        assert_eq!(Acks::decode(&acks.encode()), Ok(acks));
        assert!(Acks::decode(
            &[0; 8]
                .iter()
                .chain(&[200u8, 1])
                .copied()
                .collect::<Vec<_>>()
        )
        .is_err());
    }

    #[test]
    fn a_dead_letter_round_trips_with_its_whole_time() {
        let dead = DeadLetter {
            seq: 42,
            dead_ms: 1_800_000_000_000,
            reason: "too large".into(),
            stored: stored(4, true),
        };
        assert_eq!(DeadLetter::decode(&dead.encode()), Ok(dead));
    }

    #[test]
    fn forget_round_trips_and_refuses_an_impossible_count() {
        assert_eq!(decode_forget(&forget_body(&[3, 9])), Ok(vec![3, 9]));
        assert!(decode_forget(&[0xff, 0xff, 0x03]).is_err());
    }

    #[test]
    fn a_commit_is_padded_to_the_page_end_only_when_that_wastes_no_more_than_it_holds() {
        let commit = |len: usize| vec![7u8; len];
        // 3,000 bytes at 1,000: the page ends 96 bytes later; padded.
        let mut out = commit(3000);
        pad_to_page(1000, &mut out);
        assert_eq!((1000 + out.len() as u64) % PAGE, 0);
        let (kind, body, used) = open_frame(&out[3000..]).expect("a whole frame");
        assert_eq!((kind, used), (KIND_PADDING, 96));
        assert!(body.iter().all(|&b| b == 0));
        // A small commit at the start of a page: 4,000 bytes would be
        // wasted for 100; left as it is.
        let mut out = commit(100);
        pad_to_page(PAGE, &mut out);
        assert_eq!(out.len(), 100);
        // Ending 5 bytes before the boundary: the padding frame's header
        // does not fit, so it fills the next page as well.
        let mut out = commit(2 * PAGE as usize - 5);
        pad_to_page(0, &mut out);
        assert_eq!(out.len() as u64, 3 * PAGE);
        let pad = &out[2 * PAGE as usize - 5..];
        assert_eq!(open_frame(pad).expect("frame").0, KIND_PADDING);
        // That is more than the commit held when it is small.
        let mut out = commit(20);
        pad_to_page(PAGE - 25, &mut out);
        assert_eq!(out.len(), 20);
        // Already at the boundary: nothing.
        let mut out = commit(PAGE as usize);
        pad_to_page(0, &mut out);
        assert_eq!(out.len() as u64, PAGE);
    }

    #[test]
    fn a_file_header_of_a_newer_format_is_refused() {
        let mut header = file_header();
        check_file_header(&header).expect("ours");
        header[11] = 3;
        assert_eq!(check_file_header(&header), Err(FrameError::NewerFormat(3)));
        assert_eq!(
            check_file_header(b"not ours at all!"),
            Err(FrameError::BadMagic)
        );
    }

    #[test]
    fn properties_of_a_later_version_are_skipped() {
        let mut body = batch_body(0, &[]);
        body[16..20].copy_from_slice(&1u32.to_be_bytes());
        // flags: QoS 1 + properties; time 0; topic "t"; payload "p"; properties.
        body.extend_from_slice(&[
            FLAG_QOS1 | FLAG_PROPERTIES,
            0,
            1,
            b't',
            1,
            b'p',
            3,
            1,
            1,
            b'x',
        ]);
        let batch = Batch::decode(&body).expect("batch");
        let (_, m) = batch.messages().next().expect("one").expect("decodes");
        assert_eq!(
            (m.message.topic.as_str(), &m.message.payload[..]),
            ("t", &b"p"[..])
        );
    }
}
