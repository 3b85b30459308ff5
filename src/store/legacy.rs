//! Converting a queue written by coap2mqtt 0.1 (a sled database, queue
//! format 1) into today's log, in place, at the first start after an
//! upgrade.
//!
//! The 0.1 store is a directory holding sled's `db` and `conf` files, with a
//! `messages` tree (one record per message under an 8-byte big-endian
//! sequence number, and a counters record) and a `dead` tree. It is read
//! with sled itself; nothing else of sled is used. The conversion must never
//! lose the queue, whatever moment a crash or power cut hits:
//! 1. the new store is written beside it (`<store>.converting`), synced;
//! 2. the 0.1 store is renamed `<store>.format1`, the parent synced;
//! 3. the new store is renamed to `<store>`, the parent synced;
//! 4. `<store>.format1` is removed.
//!
//! A start that finds a step half done finishes it: `.converting` beside a
//! 0.1 store is an unfinished step 1 (removed, done again); `.format1`
//! beside a missing store is step 3 to do; beside a new store, step 4.
//! Each message keeps its topic, payload, QoS, retain flag and reception
//! time, and the order; dead letters keep their reasons.

use super::dead::DeadLetters;
use super::frame::{DeadLetter, Stored};
use super::log::Log;
use super::{now_ms, sync_dir, Limits, StoreError};
use crate::message::{Message, Qos};
use std::path::{Path, PathBuf};

/// Messages per batch frame written while converting.
const BATCH: usize = 1024;

/// Converts a 0.1 store at `path` (or finishes an interrupted conversion);
/// returns what it did, for the log.
pub fn convert_if_needed(path: &Path, limits: Limits) -> Result<Vec<String>, StoreError> {
    let converting = sibling(path, "converting");
    let old = sibling(path, "format1");
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut notes = Vec::new();
    if !path.exists() && old.exists() && converting.exists() {
        std::fs::rename(&converting, path).map_err(io)?;
        sync_parent(path).map_err(io)?;
    }
    if is_format1(path) {
        if converting.exists() {
            std::fs::remove_dir_all(&converting).map_err(io)?;
        }
        let (messages, dead) = convert(path, &converting, limits)?;
        std::fs::rename(path, &old).map_err(io)?;
        sync_parent(path).map_err(io)?;
        std::fs::rename(&converting, path).map_err(io)?;
        sync_parent(path).map_err(io)?;
        notes.push(format!(
            "converted the coap2mqtt 0.1 store: {messages} queued messages and {dead} dead letters kept, in order"
        ));
    }
    if old.exists() && path.join("segments").exists() {
        std::fs::remove_dir_all(&old).map_err(io)?;
        sync_parent(path).map_err(io)?;
    }
    Ok(notes)
}

/// A 0.1 store: sled's files, no segments.
fn is_format1(path: &Path) -> bool {
    path.join("db").exists() && !path.join("segments").exists()
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "queue".into());
    path.with_file_name(format!("{name}.{suffix}"))
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

/// Writes the 0.1 store's messages and dead letters into a new store at
/// `to`; returns how many of each.
fn convert(from: &Path, to: &Path, limits: Limits) -> Result<(u64, u64), StoreError> {
    let legacy = |reason: String| StoreError::Legacy {
        path: from.to_path_buf(),
        reason,
    };
    let io = |source| StoreError::Io {
        path: to.to_path_buf(),
        source,
    };
    let db = sled::Config::new()
        .path(from)
        .flush_every_ms(None)
        .open()
        .map_err(|e| legacy(format!("sled cannot open it: {e}")))?;
    let messages = db
        .open_tree("messages")
        .map_err(|e| legacy(e.to_string()))?;
    let dead_tree = db.open_tree("dead").map_err(|e| legacy(e.to_string()))?;

    std::fs::create_dir_all(to).map_err(io)?;
    let (mut log, mut ledger, _) = Log::open(&to.join("segments"), limits.segment_bytes())
        .map_err(|e| legacy(format!("cannot create the new store: {e}")))?;
    let mut count = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut flush =
        |batch: &mut Vec<Stored>, ledger: &mut super::ledger::Ledger| -> Result<(), StoreError> {
            if batch.is_empty() {
                return Ok(());
            }
            let appended = log.append(ledger, batch).map_err(io)?;
            appended.apply(ledger);
            batch.clear();
            Ok(())
        };
    for item in messages.iter() {
        let (key, value) = item.map_err(|e| legacy(e.to_string()))?;
        if key.len() != 8 {
            continue; // the counters record
        }
        match decode_record(&value) {
            Some(stored) => {
                batch.push(stored);
                count += 1;
            }
            None => log::error!(
                "store {}: a 0.1 record could not be read and is not converted ({} bytes)",
                from.display(),
                value.len()
            ),
        }
        if batch.len() == BATCH {
            flush(&mut batch, &mut ledger)?;
        }
    }
    flush(&mut batch, &mut ledger)?;

    let (mut dead, _) = DeadLetters::open(&to.join("dead.log")).map_err(io)?;
    let mut letters = Vec::new();
    for item in dead_tree.iter() {
        let (key, value) = item.map_err(|e| legacy(e.to_string()))?;
        let seq = key.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
        let Some((reason, record)) = split_dead_letter(&value) else {
            continue;
        };
        if let Some(stored) = decode_record(record) {
            letters.push(DeadLetter {
                seq,
                dead_ms: now_ms(),
                reason,
                stored,
            });
        }
    }
    let dead_count = letters.len() as u64;
    for chunk in letters.chunks(BATCH) {
        dead.add(chunk).map_err(io)?;
    }
    sync_dir(to).map_err(io)?;
    Ok((count, dead_count))
}

/// A 0.1 dead letter: `reason_len: u16 | reason | record`.
fn split_dead_letter(value: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(u16::from_be_bytes([*value.first()?, *value.get(1)?]));
    let reason = String::from_utf8_lossy(value.get(2..2 + len)?).into_owned();
    Some((reason, value.get(2 + len..)?))
}

/// A 0.1 record: `1 | flags (bit 0 QoS 1, bit 1 retain) | received_ms: u64
/// | topic_len: u16 | topic | payload`.
pub fn decode_record(bytes: &[u8]) -> Option<Stored> {
    if bytes.len() < 12 || bytes[0] != 1 {
        return None;
    }
    let flags = bytes[1];
    let received_ms = u64::from_be_bytes(bytes[2..10].try_into().ok()?);
    let topic_len = usize::from(u16::from_be_bytes([bytes[10], bytes[11]]));
    let rest = &bytes[12..];
    if rest.len() < topic_len {
        return None;
    }
    let (topic, payload) = rest.split_at(topic_len);
    Some(Stored {
        message: Message {
            topic: std::str::from_utf8(topic).ok()?.to_string(),
            payload: payload.to_vec(),
            qos: match flags & 1 != 0 {
                true => Qos::AtLeastOnce,
                false => Qos::AtMostOnce,
            },
            retain: flags & 2 != 0,
            meta: Default::default(),
        },
        received_ms,
        recall: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 0.1 record as coap2mqtt 0.1 wrote it.
    pub fn format1_record(topic: &str, payload: &[u8], ms: u64) -> Vec<u8> {
        let mut out = vec![1, 0b01];
        out.extend_from_slice(&ms.to_be_bytes());
        out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_format1_record_decodes_and_anything_shorter_does_not() {
        let bytes = format1_record("site/gw/t", b"21.5", 7);
        let stored = decode_record(&bytes).expect("decodes");
        assert_eq!(stored.message.topic, "site/gw/t");
        assert_eq!(stored.message.payload, b"21.5");
        assert_eq!(
            (stored.message.qos, stored.received_ms),
            (Qos::AtLeastOnce, 7)
        );
        for len in 0..bytes.len() - 4 {
            assert!(decode_record(&bytes[..len]).is_none(), "len {len}");
        }
    }

    #[test]
    fn a_format1_store_is_converted_in_place_with_its_order_and_dead_letters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("queue");
        {
            // No periodic flusher: its thread holds the database (and its
            // file lock) for a moment after the drop, and the conversion
            // below would find the lock taken.
            let db = sled::Config::new()
                .path(&path)
                .flush_every_ms(None)
                .open()
                .expect("sled");
            let messages = db.open_tree("messages").expect("tree");
            for i in 0..2_500u64 {
                let record = format1_record(
                    &format!("t/{}", i % 3),
                    format!("m{i}").as_bytes(),
                    1_000 + i,
                );
                messages
                    .insert((i + 10).to_be_bytes(), record)
                    .expect("insert");
            }
            messages
                .insert(b"\xff\xff\xff\xff\xff\xff\xff\xff#counters", vec![0u8; 16])
                .expect("counters");
            let dead = db.open_tree("dead").expect("tree");
            let mut letter = vec![0, 4];
            letter.extend_from_slice(b"why!");
            letter.extend_from_slice(&format1_record("t/d", b"dead", 5));
            dead.insert(3u64.to_be_bytes(), letter).expect("insert");
            db.flush().expect("flush");
        }
        let limits = Limits {
            max_messages: 1_000_000,
            max_bytes: 1 << 30,
            on_full: super::super::OnFull::Reject,
        };
        // sled's own threads may still hold the dropped database's file
        // lock for a moment (seen once in 70 runs even without the
        // flusher); a daemon never meets that, its old process is gone.
        let mut tries = 0;
        let notes = loop {
            match convert_if_needed(&path, limits) {
                Err(e) if tries < 50 && format!("{e:?}").contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => break other.expect("converts"),
            }
        };
        assert!(
            notes[0].contains("2500 queued messages and 1 dead letters"),
            "{notes:?}"
        );
        assert!(!sibling(&path, "format1").exists() && !sibling(&path, "converting").exists());
        assert!(!path.join("db").exists());
        let opened = super::super::Queue::open(&path, limits).expect("opens");
        let queue = opened.queue;
        assert_eq!(queue.depth().0, 2_500);
        let mut reader = queue.reader();
        let all = queue.read(&mut reader, 10_000).expect("reads");
        let payloads: Vec<String> = all
            .into_iter()
            .map(|q| String::from_utf8(q.expect("readable").message.payload).expect("utf-8"))
            .collect();
        assert_eq!(
            payloads,
            (0..2_500).map(|i| format!("m{i}")).collect::<Vec<_>>()
        );
        let dead = queue.dead_letters(10);
        assert_eq!((dead.len(), dead[0].reason.as_str()), (1, "why!"));
    }

    #[test]
    fn an_interrupted_conversion_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("queue");
        let limits = Limits {
            max_messages: 100,
            max_bytes: 1 << 20,
            on_full: super::super::OnFull::Reject,
        };
        // Step 3 not done: the new store beside the renamed old one.
        let converting = sibling(&path, "converting");
        std::fs::create_dir_all(converting.join("segments")).expect("mkdir");
        std::fs::create_dir_all(sibling(&path, "format1")).expect("mkdir");
        convert_if_needed(&path, limits).expect("finishes");
        assert!(path.join("segments").exists());
        assert!(!sibling(&path, "format1").exists() && !converting.exists());
    }
}
