//! One segment file of the queue's log: `segments/<first seq, 16 hex>.log`.
//!
//! A segment is written only by appending, by the committer, and read by
//! anyone up to the length the committer last made durable. It starts with
//! the file header and an ack frame (so the newest segment always says how
//! far the broker had taken the queue when it was begun), then batch and
//! ack frames. Everything here is plain positioned I/O on one file; what
//! the frames mean is `frame.rs`'s business and what the segments add up
//! to is `log.rs`'s.

use super::frame::{self, Acks, Batch, FrameError, FILE_HEADER, FRAME_HEADER};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file name of the segment whose first sequence number is `first`.
pub fn file_name(first: u64) -> String {
    format!("{first:016x}.log")
}

/// The first sequence number a segment file name stands for.
pub fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub fn path_of(dir: &Path, first: u64) -> PathBuf {
    dir.join(file_name(first))
}

/// Creates a new segment holding its header and `acks`; the caller syncs it
/// (with the first batch) and the directory.
pub fn create(dir: &Path, first: u64, acks: &Acks) -> io::Result<(File, u64)> {
    let path = path_of(dir, first);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let mut bytes = frame::file_header().to_vec();
    frame::frame(frame::KIND_ACK, &acks.encode(), &mut bytes);
    file.write_all_at(&bytes, 0)?;
    Ok((file, bytes.len() as u64))
}

/// Opens an existing segment for appending at its end.
pub fn open_for_append(dir: &Path, first: u64) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path_of(dir, first))
}

/// What one frame of a segment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameInfo {
    /// A batch: its sequence numbers, its time base and where it lies.
    Batch {
        first_seq: u64,
        end_seq: u64,
        base_ms: u64,
        offset: u64,
        len: u64,
    },
    Ack(Acks),
    /// Zeros that end a commit on a page boundary.
    Padding,
    /// Another kind (or one this version does not know), skipped whole.
    Other,
}

/// The result of reading a segment from start to end.
#[derive(Debug, Default)]
pub struct Scan {
    pub frames: Vec<FrameInfo>,
    /// Where the last valid frame ends: the segment's real length.
    pub valid_len: u64,
    /// Why reading stopped before the end of the file, if it did: a torn
    /// tail (no valid frame follows).
    pub stopped: Option<(u64, FrameError)>,
    /// Damage inside the segment, with valid frames after it: the bytes
    /// skipped, and the sequence numbers lost with them.
    pub damaged: Vec<Damage>,
}

/// A damaged stretch of a segment that valid frames follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub len: u64,
    /// Messages lost: `first..end` (empty when only acks were there).
    pub first: u64,
    pub end: u64,
    pub reason: String,
}

impl Scan {
    /// The newest ack frame in the segment.
    pub fn last_acks(&self) -> Option<&Acks> {
        self.frames.iter().rev().find_map(|f| match f {
            FrameInfo::Ack(a) => Some(a),
            _ => None,
        })
    }

    /// The sequence number after the segment's last batch.
    pub fn end_seq(&self) -> Option<u64> {
        self.frames.iter().rev().find_map(|f| match f {
            FrameInfo::Batch { end_seq, .. } => Some(*end_seq),
            _ => None,
        })
    }
}

/// Reads the whole segment, checking every frame, and stops at the first
/// one that is torn or damaged. Each batch is handed to `visit` (for the
/// recalls and times of its messages).
pub fn scan(file: &File, mut visit: impl FnMut(&Batch<'_>)) -> io::Result<Scan> {
    let mut bytes = Vec::new();
    let len = file.metadata()?.len();
    bytes.resize(len as usize, 0);
    file.read_exact_at(&mut bytes, 0)?;
    let mut out = Scan::default();
    if let Err(e) = frame::check_file_header(&bytes) {
        out.stopped = Some((0, e));
        return Ok(out);
    }
    let mut at = FILE_HEADER;
    out.valid_len = at as u64;
    let mut end_seq = 0u64;
    while at < bytes.len() {
        let decoded = frame::open_frame(&bytes[at..]).and_then(|(kind, body, used)| {
            let info = match kind {
                frame::KIND_BATCH => {
                    let batch = Batch::decode(body)?;
                    visit(&batch);
                    FrameInfo::Batch {
                        first_seq: batch.first_seq,
                        end_seq: batch.end_seq(),
                        base_ms: batch.base_ms,
                        offset: at as u64,
                        len: used as u64,
                    }
                }
                frame::KIND_ACK => FrameInfo::Ack(Acks::decode(body)?),
                frame::KIND_PADDING => FrameInfo::Padding,
                _ => FrameInfo::Other,
            };
            Ok((info, used))
        });
        match decoded {
            Ok((info, used)) => {
                if let FrameInfo::Batch { end_seq: end, .. } = info {
                    end_seq = end;
                }
                out.frames.push(info);
                at += used;
                out.valid_len = at as u64;
            }
            Err(e) => match resync(&bytes, at + 1, end_seq) {
                // Valid frames follow: damage, not a torn tail.
                Some((next, first)) => {
                    out.damaged.push(Damage {
                        offset: at as u64,
                        len: (next - at) as u64,
                        first: end_seq,
                        end: first.max(end_seq),
                        reason: e.to_string(),
                    });
                    at = next;
                }
                None => {
                    out.stopped = Some((at as u64, e));
                    break;
                }
            },
        }
    }
    Ok(out)
}

/// The first valid batch frame at or after `from` in `bytes` (a segment,
/// or the rest of one, read whole) whose messages start at `min_seq` or
/// later: (its offset, its first sequence number). Used to step over
/// damage; a CRC that checks out where no frame was written is a chance of
/// about one in four billion per position.
pub fn resync(bytes: &[u8], from: usize, min_seq: u64) -> Option<(usize, u64)> {
    let last = bytes.len().checked_sub(FRAME_HEADER)?;
    (from..=last).find_map(|at| {
        if bytes[at] != frame::KIND_BATCH {
            return None;
        }
        let (_, body, _) = frame::open_frame(&bytes[at..]).ok()?;
        let batch = Batch::decode(body).ok()?;
        (batch.first_seq >= min_seq).then_some((at, batch.first_seq))
    })
}

/// Reads `file` from `offset` to `limit` and finds the next valid batch
/// frame (see [`resync`]): (its offset in the file, its first seq).
pub fn resync_file(
    file: &File,
    offset: u64,
    limit: u64,
    min_seq: u64,
) -> io::Result<Option<(u64, u64)>> {
    if offset >= limit {
        return Ok(None);
    }
    let mut bytes = vec![0u8; (limit - offset) as usize];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(resync(&bytes, 1, min_seq).map(|(at, first)| (offset + at as u64, first)))
}

/// Reads the frame at `offset`, checked: (kind, body). `limit` is where
/// the readable part of the file ends.
pub fn read_frame(file: &File, offset: u64, limit: u64) -> Result<(u8, Vec<u8>), ReadError> {
    if offset + FRAME_HEADER as u64 > limit {
        return Err(ReadError::End);
    }
    let mut header = [0u8; FRAME_HEADER];
    file.read_exact_at(&mut header, offset)?;
    let (kind, len, crc) = frame::read_header(&header)?;
    if offset + (FRAME_HEADER + len) as u64 > limit {
        return Err(FrameError::Truncated("frame past the durable end").into());
    }
    let mut body = vec![0u8; len];
    file.read_exact_at(&mut body, offset + FRAME_HEADER as u64)?;
    frame::check_body(kind, crc, &body)?;
    Ok((kind, body))
}

/// A frame's kind, its whole length, and a batch's `(first, end)`.
pub type Peeked = (u8, u64, Option<(u64, u64)>);

/// Reads only the header of the frame at `offset` and, for a batch, its
/// sequence numbers.
pub fn peek_frame(file: &File, offset: u64, limit: u64) -> Result<Peeked, ReadError> {
    if offset + FRAME_HEADER as u64 > limit {
        return Err(ReadError::End);
    }
    let mut head = [0u8; FRAME_HEADER + 20];
    let n = (limit - offset).min(head.len() as u64) as usize;
    file.read_exact_at(&mut head[..n], offset)?;
    let (kind, len, _) = frame::read_header(&head[..n])?;
    let total = (FRAME_HEADER + len) as u64;
    if offset + total > limit {
        return Err(FrameError::Truncated("frame past the durable end").into());
    }
    let seqs = match kind {
        frame::KIND_BATCH if n >= FRAME_HEADER + 20 => {
            let body = &head[FRAME_HEADER..FRAME_HEADER + 20];
            let first = u64::from_be_bytes(body[..8].try_into().unwrap_or([0; 8]));
            let count = u32::from_be_bytes(body[16..20].try_into().unwrap_or([0; 4]));
            Some((first, first.saturating_add(u64::from(count))))
        }
        frame::KIND_BATCH => return Err(FrameError::Truncated("batch header").into()),
        _ => None,
    };
    Ok((kind, total, seqs))
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing more to read (yet).
    #[error("end of the durable part")]
    End,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("damaged frame: {0}")]
    Damaged(#[from] FrameError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Qos};
    use crate::store::frame::Stored;

    fn stored(i: u64) -> Stored {
        Stored {
            message: Message {
                topic: "t".into(),
                payload: vec![i as u8; 3],
                qos: Qos::AtLeastOnce,
                retain: false,
                meta: Default::default(),
            },
            received_ms: 1_000 + i,
            recall: Vec::new(),
        }
    }

    fn append_batch(file: &File, at: u64, first: u64, n: u64) -> u64 {
        let messages: Vec<Stored> = (0..n).map(stored).collect();
        let mut bytes = Vec::new();
        frame::frame(
            frame::KIND_BATCH,
            &frame::batch_body(first, &messages),
            &mut bytes,
        );
        file.write_all_at(&bytes, at).expect("write");
        at + bytes.len() as u64
    }

    #[test]
    fn names_sort_as_sequence_numbers_and_parse_back() {
        assert_eq!(file_name(255), "00000000000000ff.log");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("ff.log"), None);
        assert_eq!(parse_name("00000000000000ff.tmp"), None);
    }

    #[test]
    fn a_scan_finds_every_frame_and_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let acks = Acks {
            watermark: 10,
            above: vec![],
        };
        let (file, start) = create(dir.path(), 10, &acks).expect("create");
        let mid = append_batch(&file, start, 10, 3);
        let end = append_batch(&file, mid, 13, 2);
        // A torn write: half of a third batch.
        let mut torn = Vec::new();
        frame::frame(
            frame::KIND_BATCH,
            &frame::batch_body(15, &[stored(9)]),
            &mut torn,
        );
        file.write_all_at(&torn[..torn.len() / 2], end)
            .expect("write");
        let scan = scan(&file, |_| {}).expect("scan");
        assert_eq!(scan.valid_len, end);
        assert_eq!(scan.end_seq(), Some(15));
        assert_eq!(scan.last_acks(), Some(&acks));
        assert!(matches!(scan.stopped, Some((at, _)) if at == end));
        assert!(matches!(
            peek_frame(&file, mid, end),
            Ok((frame::KIND_BATCH, len, Some((13, 15)))) if mid + len == end
        ));
        assert!(matches!(read_frame(&file, end, end), Err(ReadError::End)));
        assert!(matches!(
            read_frame(&file, end, end + torn.len() as u64),
            Err(ReadError::Damaged(_)) | Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn a_file_that_is_not_a_segment_is_stopped_at_its_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path_of(dir.path(), 1);
        std::fs::write(&path, b"certainly not a segment file").expect("write");
        let file = File::open(&path).expect("open");
        let scan = scan(&file, |_| {}).expect("scan");
        assert!(scan.frames.is_empty());
        assert!(matches!(scan.stopped, Some((0, FrameError::BadMagic))));
    }
}
