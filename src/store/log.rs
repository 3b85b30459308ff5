//! The log: the queue's segment files in `<store>/segments`, and the one
//! writer that appends to the newest of them.
//!
//! Durability: a batch is written after the last durable byte of the newest
//! segment and `fdatasync`ed before anyone is answered; a new segment file
//! is synced and then its directory, before its first batch counts. Ack
//! frames ride along with the next batch (or are written now and then
//! without a sync): losing one only means sending again what the broker
//! already has.
//!
//! Recovery at open reads only the newest segment whole (its frames are
//! checked; a torn tail, which can only be the part of a write no one was
//! answered for, is cut off) and takes the older ones by their names and
//! sizes, so start-up does not grow with the backlog. Segments wholly below
//! the watermark are deleted, except the newest few kept for deduplication
//! (their recalls), so the disk holds what is queued and little more.

use super::frame::{self, Acks, Stored, FILE_HEADER};
use super::ledger::{Ledger, SegmentMeta, INDEX_EVERY};
use super::segment;
use super::{sync_dir, Seq, RECALL_CAPACITY, RECALL_LIFETIME_MS};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The segment size the store aims for; smaller when `store.max_bytes` is
/// small, so that the limit is met a segment at a time.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// The one writer.
pub struct Log {
    dir: PathBuf,
    active: File,
    segment_bytes: u64,
    /// Bytes written to the newest segment, durable or not.
    written: u64,
    /// What the last ack frame written said.
    last_acks: Acks,
}

/// What opening found besides the queue itself.
#[derive(Debug, Default)]
pub struct Recovered {
    /// (received ms, recall) of the newest messages, oldest first.
    pub recalls: Vec<(u64, Vec<u8>)>,
    /// Bytes of a torn tail cut off the newest segment.
    pub torn_bytes: u64,
    /// Segment files that were not ours or not readable, set aside.
    pub set_aside: Vec<String>,
    /// Damage inside the newest segment (valid frames after it): the
    /// messages it held are lost and already retired.
    pub damaged: Vec<segment::Damage>,
}

/// Opening failed in a way the daemon must not run on.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(
        "{path}: written by a newer coap2mqtt (queue format {found}, this one reads up to {})",
        frame::FORMAT
    )]
    NewerFormat { path: PathBuf, found: u32 },
}

impl Log {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Log, Ledger, Recovered), OpenError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
                if let Some(grand) = parent.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(grand)?;
                }
            }
        }
        let mut recovered = Recovered::default();
        let mut firsts = list(dir)?;
        // The newest segment must have a readable header: one without is a
        // creation cut short (never synced, so nothing in it was answered).
        while let Some(&newest) = firsts.last() {
            let file = segment::open_for_append(dir, newest)?;
            let mut header = [0u8; FILE_HEADER];
            let len = file.metadata()?.len();
            let readable = len >= FILE_HEADER as u64 && file.read_exact_at(&mut header, 0).is_ok();
            match readable.then(|| frame::check_file_header(&header)) {
                Some(Ok(())) => break,
                Some(Err(frame::FrameError::NewerFormat(found))) => {
                    return Err(OpenError::NewerFormat {
                        path: segment::path_of(dir, newest),
                        found,
                    })
                }
                _ => {
                    let name = segment::file_name(newest);
                    let aside = dir.join(format!("{name}.unfinished"));
                    std::fs::rename(dir.join(&name), &aside)?;
                    recovered.set_aside.push(name);
                    firsts.pop();
                }
            }
        }
        let Some(&newest) = firsts.last() else {
            return Log::create(dir, segment_bytes, 1, recovered);
        };
        let active = segment::open_for_append(dir, newest)?;
        let mut recalls = Vec::new();
        let mut newest_ms = 0;
        let scan = segment::scan(&active, |batch| {
            collect(batch, &mut recalls, &mut newest_ms);
        })?;
        let file_len = active.metadata()?.len();
        if scan.valid_len < file_len {
            active.set_len(scan.valid_len)?;
            active.sync_all()?;
            recovered.torn_bytes = file_len - scan.valid_len;
        }
        let acks = scan.last_acks().cloned().unwrap_or(Acks {
            watermark: firsts[0],
            above: Vec::new(),
        });
        let next_seq = scan
            .end_seq()
            .unwrap_or(newest)
            .max(newest)
            .max(acks.watermark);
        let mut ledger = Ledger {
            segments: Vec::with_capacity(firsts.len()),
            next_seq,
            watermark: acks.watermark.max(firsts[0]),
            retired: acks.above.iter().copied().collect(),
        };
        for damage in &scan.damaged {
            for seq in damage.first..damage.end {
                ledger.retire(seq);
            }
        }
        recovered.damaged = scan.damaged.clone();
        for (i, &first) in firsts.iter().enumerate() {
            let (end_seq, len, newest_ms, index) = if first == newest {
                (next_seq, scan.valid_len, newest_ms, index_of(&scan))
            } else {
                let len = std::fs::metadata(segment::path_of(dir, first))?.len();
                (firsts[i + 1], len, 0, Vec::new())
            };
            ledger.segments.push(SegmentMeta {
                first_seq: first,
                end_seq,
                len,
                newest_ms,
                index,
            });
        }
        // Recalls may reach back into older segments.
        let mut older = firsts.len() - 1;
        while recalls.len() < RECALL_CAPACITY && older > 0 {
            older -= 1;
            let file = File::open(segment::path_of(dir, firsts[older]))?;
            let mut earlier = Vec::new();
            let mut seg_newest = 0;
            segment::scan(&file, |batch| collect(batch, &mut earlier, &mut seg_newest))?;
            ledger.segments[older].newest_ms = seg_newest;
            earlier.append(&mut recalls);
            recalls = earlier;
            if seg_newest.saturating_add(RECALL_LIFETIME_MS) < super::now_ms() {
                break;
            }
        }
        let keep_from = recalls.len().saturating_sub(RECALL_CAPACITY);
        recovered.recalls = recalls.split_off(keep_from);
        let log = Log {
            dir: dir.to_path_buf(),
            active,
            segment_bytes,
            written: scan.valid_len,
            last_acks: acks,
        };
        let gone = Log::retired_segments(&ledger, super::now_ms(), false);
        let deleted = log.delete_segments(&gone);
        ledger.segments.retain(|s| !deleted.contains(&s.first_seq));
        Ok((log, ledger, recovered))
    }

    /// A new log whose first message will be `first`.
    fn create(
        dir: &Path,
        segment_bytes: u64,
        first: Seq,
        recovered: Recovered,
    ) -> Result<(Log, Ledger, Recovered), OpenError> {
        let acks = Acks {
            watermark: first,
            above: Vec::new(),
        };
        let (active, len) = segment::create(dir, first, &acks)?;
        active.sync_all()?;
        sync_dir(dir)?;
        let ledger = Ledger {
            segments: vec![SegmentMeta {
                first_seq: first,
                end_seq: first,
                len,
                newest_ms: 0,
                index: Vec::new(),
            }],
            next_seq: first,
            watermark: first,
            retired: Default::default(),
        };
        let log = Log {
            dir: dir.to_path_buf(),
            active,
            segment_bytes,
            written: len,
            last_acks: acks,
        };
        Ok((log, ledger, recovered))
    }

    /// Appends `messages` as one batch (with the acks, if they changed)
    /// and makes it durable. The ledger is only read: the caller applies
    /// the returned [`Appended`] once this returns, so that readers never
    /// see a batch before it is durable and are not held up by the sync.
    /// On an error nothing of it counts and the file is cut back to its
    /// durable end.
    pub fn append(&mut self, ledger: &Ledger, messages: &[Stored]) -> io::Result<Appended> {
        let first = ledger.next_seq;
        let acks = ledger.acks();
        let mut batch = Vec::with_capacity(64 + 96 * messages.len());
        frame::frame(
            frame::KIND_BATCH,
            &frame::batch_body(first, messages),
            &mut batch,
        );
        let active_len = ledger.segments.last().map_or(0, |s| s.len);
        let has_batches = ledger
            .segments
            .last()
            .is_some_and(|s| s.end_seq > s.first_seq);
        let roll = has_batches && self.written + batch.len() as u64 > self.segment_bytes;
        let (new_segment, batch_offset) = if roll {
            let (meta, at) = self.roll_and_append(first, &acks, &batch)?;
            (Some(meta), at)
        } else {
            let mut bytes = Vec::with_capacity(batch.len() + 32);
            if acks != self.last_acks {
                frame::frame(frame::KIND_ACK, &acks.encode(), &mut bytes);
            }
            let at = self.written + bytes.len() as u64;
            bytes.extend_from_slice(&batch);
            frame::pad_to_page(self.written, &mut bytes);
            if let Err(e) = self.write_and_sync(&bytes) {
                // Best effort: nothing after the durable end may stay, or
                // the next batch would land behind garbage.
                let _ = self.active.set_len(active_len);
                self.written = active_len;
                return Err(e);
            }
            (None, at)
        };
        self.last_acks = acks;
        Ok(Appended {
            new_segment,
            first,
            end: first + messages.len() as u64,
            batch_offset,
            len: self.written,
            newest_ms: messages.iter().map(|m| m.received_ms).max().unwrap_or(0),
        })
    }

    fn write_and_sync(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.active.write_all_at(bytes, self.written)?;
        self.written += bytes.len() as u64;
        self.active.sync_data()
    }

    /// Starts a new segment for `batch`: the old one's last bytes made
    /// durable, the new file synced, then its directory.
    fn roll_and_append(
        &mut self,
        first: Seq,
        acks: &Acks,
        batch: &[u8],
    ) -> io::Result<(SegmentMeta, u64)> {
        self.active.sync_data()?;
        let (file, header_len) = segment::create(&self.dir, first, acks)?;
        let mut bytes = batch.to_vec();
        frame::pad_to_page(header_len, &mut bytes);
        let written = file
            .write_all_at(&bytes, header_len)
            .and_then(|()| file.sync_data())
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = written {
            let _ = std::fs::remove_file(segment::path_of(&self.dir, first));
            return Err(e);
        }
        self.active = file;
        self.written = header_len + bytes.len() as u64;
        let meta = SegmentMeta {
            first_seq: first,
            end_seq: first,
            len: header_len,
            newest_ms: 0,
            index: Vec::new(),
        };
        Ok((meta, header_len))
    }

    /// Writes an ack frame when the acks changed since the last one, not
    /// synced: for quiet times, when no batch would carry it.
    pub fn write_acks(&mut self, ledger: &Ledger) -> io::Result<()> {
        let acks = ledger.acks();
        if acks == self.last_acks {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(32);
        frame::frame(frame::KIND_ACK, &acks.encode(), &mut bytes);
        self.active.write_all_at(&bytes, self.written)?;
        self.written += bytes.len() as u64;
        self.last_acks = acks;
        Ok(())
    }

    /// The segments wholly retired that may go now: all but those that
    /// hold the recalls of the newest messages (kept until they are older
    /// than EXCHANGE_LIFETIME or enough newer messages came), unless
    /// `force`. Returns their first sequence numbers, oldest first.
    pub fn retired_segments(ledger: &Ledger, now_ms: u64, force: bool) -> Vec<Seq> {
        let mut gone = Vec::new();
        for segment in &ledger.segments[..ledger.segments.len().saturating_sub(1)] {
            if segment.end_seq > ledger.watermark {
                break;
            }
            let recent = segment.newest_ms.saturating_add(RECALL_LIFETIME_MS) > now_ms
                && ledger.next_seq.saturating_sub(segment.end_seq) < RECALL_CAPACITY as u64;
            if recent && !force {
                break;
            }
            gone.push(segment.first_seq);
        }
        gone
    }

    /// Deletes the segment files of `firsts` (see [`Log::retired_segments`]);
    /// returns those deleted, which the caller drops from the ledger.
    pub fn delete_segments(&self, firsts: &[Seq]) -> Vec<Seq> {
        let mut deleted = Vec::new();
        for &first in firsts {
            match std::fs::remove_file(segment::path_of(&self.dir, first)) {
                Ok(()) => deleted.push(first),
                Err(e) if e.kind() == io::ErrorKind::NotFound => deleted.push(first),
                Err(e) => {
                    log::warn!(
                        "store: cannot delete the retired segment {}: {e}",
                        segment::file_name(first)
                    );
                    break;
                }
            }
        }
        deleted
    }

    /// Makes everything written to the newest segment durable.
    pub fn sync(&self) -> io::Result<()> {
        self.active.sync_data()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A batch made durable, for the ledger.
#[derive(Debug)]
pub struct Appended {
    /// The segment begun for it, if the batch started one.
    new_segment: Option<SegmentMeta>,
    first: Seq,
    end: Seq,
    batch_offset: u64,
    len: u64,
    newest_ms: u64,
}

impl Appended {
    /// Counts the batch in the ledger: from now on readers see it.
    pub fn apply(self, ledger: &mut Ledger) {
        if let Some(segment) = self.new_segment {
            ledger.segments.push(segment);
        }
        ledger.next_seq = self.end;
        if let Some(active) = ledger.segments.last_mut() {
            active.end_seq = self.end;
            active.len = self.len;
            active.newest_ms = active.newest_ms.max(self.newest_ms);
            let due = active
                .index
                .last()
                .is_none_or(|(_, offset)| self.batch_offset >= offset + INDEX_EVERY);
            if due {
                active.index.push((self.first, self.batch_offset));
            }
        }
    }
}

/// The segment files in `dir`, by first sequence number.
fn list(dir: &Path) -> io::Result<Vec<Seq>> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first) = entry.file_name().to_str().and_then(segment::parse_name) {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// A sparse index of a scanned segment.
fn index_of(scan: &segment::Scan) -> Vec<(Seq, u64)> {
    let mut index: Vec<(Seq, u64)> = Vec::new();
    for info in &scan.frames {
        if let segment::FrameInfo::Batch {
            first_seq, offset, ..
        } = info
        {
            let due = index
                .last()
                .is_none_or(|(_, last)| *offset >= last + INDEX_EVERY);
            if due {
                index.push((*first_seq, *offset));
            }
        }
    }
    index
}

/// Takes the recalls and the newest time of a batch's messages.
fn collect(batch: &frame::Batch<'_>, recalls: &mut Vec<(u64, Vec<u8>)>, newest_ms: &mut u64) {
    for (_, stored) in batch.messages().flatten() {
        *newest_ms = (*newest_ms).max(stored.received_ms);
        if !stored.recall.is_empty() {
            recalls.push((stored.received_ms, stored.recall));
        }
    }
}
