//! Dead letters: messages the broker keeps refusing, kept aside with the
//! reason, in `<store>/dead.log`, at most [`DEAD_LETTER_CAPACITY`].
//!
//! The file is a log like the queue's: dead-letter frames, and forget
//! frames for the ones dropped (the oldest, past the cap; or by an
//! operator). Only the committer writes it; a dead letter is synced before
//! its message leaves the queue, so a crash between the two leaves a copy
//! in both, never in neither. When forgotten frames make up most of the
//! file, it is rewritten (to a temporary file, synced, renamed over, the
//! directory synced). In memory: a small entry per dead letter, never the
//! messages.

use super::frame::{self, DeadLetter, FILE_HEADER};
use super::{sync_dir, Seq};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Dead letters beyond this many push the oldest out.
pub const DEAD_LETTER_CAPACITY: usize = 10_000;

/// One dead letter as the index knows it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: Seq,
    offset: u64,
    len: u64,
}

pub struct DeadLetters {
    path: PathBuf,
    file: File,
    written: u64,
    /// Live dead letters, oldest first.
    entries: Vec<Entry>,
    /// Frames in the file that no longer count (forgotten letters and the
    /// forget frames themselves).
    stale: usize,
}

impl DeadLetters {
    /// Opens (or creates) the file; returns the bytes of a torn tail cut off.
    pub fn open(path: &Path) -> io::Result<(DeadLetters, u64)> {
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if created || file.metadata()?.len() < FILE_HEADER as u64 {
            file.set_len(0)?;
            file.write_all_at(&frame::file_header(), 0)?;
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        let len = file.metadata()?.len();
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)?;
        frame::check_file_header(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut forgotten = HashSet::new();
        let mut frames = 0usize;
        let mut at = FILE_HEADER;
        while at < bytes.len() {
            let Ok((kind, body, used)) = frame::open_frame(&bytes[at..]) else {
                break;
            };
            frames += 1;
            match kind {
                frame::KIND_DEAD => {
                    if let Ok(letter) = DeadLetter::decode(body) {
                        entries.push(Entry {
                            seq: letter.seq,
                            offset: at as u64,
                            len: used as u64,
                        });
                    }
                }
                frame::KIND_FORGET => {
                    if let Ok(seqs) = frame::decode_forget(body) {
                        forgotten.extend(seqs);
                    }
                }
                _ => {}
            }
            at += used;
        }
        let torn = len - at as u64;
        if torn > 0 {
            file.set_len(at as u64)?;
            file.sync_all()?;
        }
        entries.retain(|e| !forgotten.contains(&e.seq));
        let stale = frames - entries.len();
        Ok((
            DeadLetters {
                path: path.to_path_buf(),
                file,
                written: at as u64,
                entries,
                stale,
            },
            torn,
        ))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Writes `letters` (and forgets the oldest beyond the cap) and syncs.
    pub fn add(&mut self, letters: &[DeadLetter]) -> io::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        let mut added = Vec::with_capacity(letters.len());
        for letter in letters {
            let at = self.written + bytes.len() as u64;
            let before = bytes.len();
            frame::frame(frame::KIND_DEAD, &letter.encode(), &mut bytes);
            added.push(Entry {
                seq: letter.seq,
                offset: at,
                len: (bytes.len() - before) as u64,
            });
        }
        let over = (self.entries.len() + added.len()).saturating_sub(DEAD_LETTER_CAPACITY);
        let oldest: Vec<Seq> = self
            .entries
            .iter()
            .chain(&added)
            .take(over)
            .map(|e| e.seq)
            .collect();
        if !oldest.is_empty() {
            frame::frame(frame::KIND_FORGET, &frame::forget_body(&oldest), &mut bytes);
        }
        self.write(&bytes)?;
        self.entries.extend(added);
        if over > 0 {
            self.entries.drain(..over);
            self.stale += over + 1;
        }
        self.compact_if_stale()
    }

    /// Forgets the dead letters `seqs` (those there); returns how many.
    pub fn forget(&mut self, seqs: &[Seq]) -> io::Result<usize> {
        let wanted: HashSet<Seq> = seqs.iter().copied().collect();
        let known: Vec<Seq> = self
            .entries
            .iter()
            .map(|e| e.seq)
            .filter(|s| wanted.contains(s))
            .collect();
        if known.is_empty() {
            return Ok(0);
        }
        let mut bytes = Vec::new();
        frame::frame(frame::KIND_FORGET, &frame::forget_body(&known), &mut bytes);
        self.write(&bytes)?;
        self.entries.retain(|e| !wanted.contains(&e.seq));
        self.stale += known.len() + 1;
        self.compact_if_stale()?;
        Ok(known.len())
    }

    /// The dead letters, oldest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Vec<DeadLetter> {
        self.entries
            .iter()
            .take(limit)
            .filter_map(|e| self.read(e).ok())
            .collect()
    }

    /// Hands each of the oldest `limit` dead letters to `visit`, one at a
    /// time: a list of thousands never holds their payloads at once.
    pub fn visit(&self, limit: usize, mut visit: impl FnMut(DeadLetter)) {
        for entry in self.entries.iter().take(limit) {
            if let Ok(letter) = self.read(entry) {
                visit(letter);
            }
        }
    }

    /// The newest `limit` dead letters, newest first.
    pub fn newest(&self, limit: usize) -> Vec<DeadLetter> {
        self.entries
            .iter()
            .rev()
            .take(limit)
            .filter_map(|e| self.read(e).ok())
            .collect()
    }

    /// One dead letter by its sequence number.
    pub fn get(&self, seq: Seq) -> Option<DeadLetter> {
        let entry = self.entries.iter().find(|e| e.seq == seq)?;
        self.read(entry).ok()
    }

    /// Whether `seq` is a dead letter now.
    pub fn contains(&self, seq: Seq) -> bool {
        self.entries.iter().any(|e| e.seq == seq)
    }

    /// Every dead letter's sequence number, oldest first.
    pub fn seqs(&self) -> Vec<Seq> {
        self.entries.iter().map(|e| e.seq).collect()
    }

    /// The bytes `seq`'s frame takes (about its message's size), if known.
    pub fn frame_len(&self, seq: Seq) -> Option<u64> {
        self.entries.iter().find(|e| e.seq == seq).map(|e| e.len)
    }

    fn read(&self, entry: &Entry) -> io::Result<DeadLetter> {
        let mut bytes = vec![0u8; entry.len as usize];
        self.file.read_exact_at(&mut bytes, entry.offset)?;
        let (_, body, _) =
            frame::open_frame(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        DeadLetter::decode(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let result = self
            .file
            .write_all_at(bytes, self.written)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.written += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.written);
                Err(e)
            }
        }
    }

    /// Rewrites the file with only the live dead letters once stale frames
    /// outnumber them (and there are enough to matter).
    fn compact_if_stale(&mut self) -> io::Result<()> {
        if self.stale < 1_024 || self.stale < self.entries.len() {
            return Ok(());
        }
        let temp = self.path.with_extension("log.compacting");
        let mut bytes = frame::file_header().to_vec();
        let mut entries = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let mut frame_bytes = vec![0u8; entry.len as usize];
            self.file.read_exact_at(&mut frame_bytes, entry.offset)?;
            entries.push(Entry {
                seq: entry.seq,
                offset: bytes.len() as u64,
                len: entry.len,
            });
            bytes.extend_from_slice(&frame_bytes);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        file.write_all_at(&bytes, 0)?;
        file.sync_all()?;
        std::fs::rename(&temp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.file = file;
        self.written = bytes.len() as u64;
        self.entries = entries;
        self.stale = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Qos};
    use crate::store::frame::Stored;

    fn letter(seq: Seq) -> DeadLetter {
        DeadLetter {
            seq,
            dead_ms: 5,
            reason: format!("reason {seq}"),
            stored: Stored {
                message: Message {
                    topic: "t".into(),
                    payload: seq.to_be_bytes().to_vec(),
                    qos: Qos::AtLeastOnce,
                    retain: false,
                    meta: Default::default(),
                },
                received_ms: 1,
                recall: Vec::new(),
            },
        }
    }

    #[test]
    fn dead_letters_survive_a_reopen_and_forgotten_ones_stay_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dead.log");
        {
            let (mut dead, _) = DeadLetters::open(&path).expect("open");
            dead.add(&[letter(1), letter(2), letter(3)]).expect("add");
            assert_eq!(dead.forget(&[2, 99]).expect("forget"), 1);
        }
        let (dead, torn) = DeadLetters::open(&path).expect("reopen");
        assert_eq!(torn, 0);
        let seqs: Vec<Seq> = dead.list(10).iter().map(|d| d.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
        assert_eq!(dead.get(3), Some(letter(3)));
    }

    #[test]
    fn past_the_cap_the_oldest_go_and_the_file_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dead.log");
        let (mut dead, _) = DeadLetters::open(&path).expect("open");
        let total = DEAD_LETTER_CAPACITY as u64 * 2 + 10;
        for chunk in (0..total).collect::<Vec<_>>().chunks(500) {
            let letters: Vec<DeadLetter> = chunk.iter().map(|s| letter(*s)).collect();
            dead.add(&letters).expect("add");
        }
        assert_eq!(dead.len(), DEAD_LETTER_CAPACITY);
        assert_eq!(dead.list(1)[0].seq, total - DEAD_LETTER_CAPACITY as u64);
        let size = std::fs::metadata(&path).expect("size").len();
        drop(dead);
        let (dead, _) = DeadLetters::open(&path).expect("reopen");
        assert_eq!(dead.len(), DEAD_LETTER_CAPACITY);
        assert_eq!(dead.list(1)[0].seq, total - DEAD_LETTER_CAPACITY as u64);
        let per_letter = size / DEAD_LETTER_CAPACITY as u64;
        assert!(per_letter < 200, "the file was compacted: {size} bytes");
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dead.log");
        {
            let (mut dead, _) = DeadLetters::open(&path).expect("open");
            dead.add(&[letter(7)]).expect("add");
        }
        let mut bytes = std::fs::read(&path).expect("read");
        let whole = bytes.len();
        let mut tail = Vec::new();
        frame::frame(frame::KIND_DEAD, &letter(8).encode(), &mut tail);
        bytes.extend_from_slice(&tail[..tail.len() - 3]);
        std::fs::write(&path, &bytes).expect("write");
        let (dead, torn) = DeadLetters::open(&path).expect("reopen");
        assert_eq!(torn, (bytes.len() - whole) as u64);
        assert_eq!(dead.list(10).len(), 1);
    }
}
