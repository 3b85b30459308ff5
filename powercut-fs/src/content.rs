//! The bytes of one regular file, stored as fixed-size chunks shared by
//! reference counting.
//!
//! A file has two versions of its content (what reads see now and what would
//! survive a power cut). Copying a whole file at every `fsync` would make an
//! fsync cost the file's size; with chunks behind `Arc`, taking a snapshot
//! costs one pointer per chunk, and a chunk is copied only when it is next
//! written while shared. A chunk that was never written (a hole) is not stored
//! and reads as zeros.

use std::sync::Arc;

/// Bytes per chunk.
pub const CHUNK: usize = 64 * 1024;

/// The largest file size this filesystem accepts (64 GiB); beyond it writes,
/// truncates and fallocates fail with `EFBIG`. The chunk table of a file that
/// large is 8 MiB, so a stray write at a huge offset cannot exhaust memory.
pub const MAX_FILE_SIZE: u64 = 64 << 30;

/// The content of a regular file.
///
/// Invariant: every stored byte at or beyond `len` is zero, so that growing
/// the file (by `set_len` or by a write past the end) exposes zeros.
#[derive(Clone, Debug, Default)]
pub struct Content {
    len: u64,
    chunks: Vec<Option<Arc<Vec<u8>>>>,
}

fn chunk_index(offset: u64) -> usize {
    // offset <= MAX_FILE_SIZE, so the index fits comfortably in usize.
    (offset / CHUNK as u64) as usize
}

fn chunk_offset(offset: u64) -> usize {
    (offset % CHUNK as u64) as usize
}

impl Content {
    /// The file size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes actually stored (holes excluded), for statfs and `st_blocks`.
    pub fn allocated(&self) -> u64 {
        self.chunks.iter().filter(|c| c.is_some()).count() as u64 * CHUNK as u64
    }

    /// Up to `size` bytes from `offset`; fewer at the end of the file, none
    /// past it. Holes read as zeros.
    pub fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        if offset >= self.len {
            return Vec::new();
        }
        let end = self.len.min(offset.saturating_add(size as u64));
        let mut out = vec![0u8; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            let index = chunk_index(pos);
            let start = chunk_offset(pos);
            let take = (CHUNK - start).min((end - pos) as usize);
            if let Some(Some(chunk)) = self.chunks.get(index) {
                let at = (pos - offset) as usize;
                out[at..at + take].copy_from_slice(&chunk[start..start + take]);
            }
            pos += take as u64;
        }
        out
    }

    /// Writes `data` at `offset`, growing the file if it ends past the end.
    /// The caller checks `offset + data.len() <= MAX_FILE_SIZE`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        if data.is_empty() {
            return;
        }
        let last = chunk_index(end - 1);
        if self.chunks.len() <= last {
            self.chunks.resize(last + 1, None);
        }
        let mut pos = offset;
        let mut from = 0usize;
        while pos < end {
            let index = chunk_index(pos);
            let start = chunk_offset(pos);
            let take = (CHUNK - start).min((end - pos) as usize);
            let chunk = self.chunks[index].get_or_insert_with(|| Arc::new(vec![0u8; CHUNK]));
            Arc::make_mut(chunk)[start..start + take].copy_from_slice(&data[from..from + take]);
            pos += take as u64;
            from += take;
        }
        self.len = self.len.max(end);
    }

    /// Sets the size: shrinking discards the tail, growing adds zeros.
    pub fn set_len(&mut self, len: u64) {
        if len < self.len {
            let keep = chunk_index(len);
            let cut = chunk_offset(len);
            if cut == 0 {
                self.chunks.truncate(keep);
            } else {
                self.chunks.truncate(keep + 1);
                if let Some(Some(chunk)) = self.chunks.get_mut(keep) {
                    Arc::make_mut(chunk)[cut..].fill(0);
                }
            }
        }
        self.len = len;
    }

    /// Sets `len` bytes from `offset` to zero without changing the size;
    /// whole chunks become holes again.
    pub fn zero(&mut self, offset: u64, len: u64) {
        let stored_end = self.chunks.len() as u64 * CHUNK as u64;
        let end = offset.saturating_add(len).min(stored_end);
        let mut pos = offset;
        while pos < end {
            let index = chunk_index(pos);
            let start = chunk_offset(pos);
            let take = (CHUNK - start).min((end - pos) as usize);
            if take == CHUNK {
                self.chunks[index] = None;
            } else if let Some(chunk) = self.chunks[index].as_mut() {
                Arc::make_mut(chunk)[start..start + take].fill(0);
            }
            pos += take as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_across_a_chunk_boundary_reads_back() {
        let mut c = Content::default();
        let data: Vec<u8> = (0..3 * CHUNK as u32).map(|i| (i % 251) as u8).collect();
        c.write(CHUNK as u64 / 2, &data);
        assert_eq!(c.len(), CHUNK as u64 / 2 + data.len() as u64);
        assert_eq!(c.read(CHUNK as u64 / 2, data.len()), data);
        assert_eq!(c.read(0, 10), vec![0; 10]);
    }

    #[test]
    fn a_snapshot_is_not_changed_by_later_writes() {
        let mut c = Content::default();
        c.write(0, b"hello");
        let snapshot = c.clone();
        c.write(0, b"HELLO world");
        assert_eq!(snapshot.read(0, 100), b"hello");
        assert_eq!(c.read(0, 100), b"HELLO world");
    }

    #[test]
    fn shrinking_then_growing_exposes_zeros_not_old_bytes() {
        let mut c = Content::default();
        c.write(0, &[7u8; 100]);
        c.set_len(10);
        c.set_len(20);
        let mut want = vec![7u8; 10];
        want.extend_from_slice(&[0u8; 10]);
        assert_eq!(c.read(0, 100), want);
    }

    #[test]
    fn zeroing_whole_chunks_frees_them() {
        let mut c = Content::default();
        c.write(0, &vec![1u8; 3 * CHUNK]);
        c.zero(10, 2 * CHUNK as u64);
        assert_eq!(c.len(), 3 * CHUNK as u64);
        assert_eq!(c.allocated(), 2 * CHUNK as u64);
        let all = c.read(0, 3 * CHUNK);
        assert!(all[..10].iter().all(|&b| b == 1));
        assert!(all[10..2 * CHUNK + 10].iter().all(|&b| b == 0));
        assert!(all[2 * CHUNK + 10..].iter().all(|&b| b == 1));
    }
}
