//! Reading the queue forward from a sequence number, as the uplink does
//! for each connection: durable messages only, retired ones skipped,
//! damage reported as a range the caller can retire.
//!
//! A reader keeps its place (segment, offset) between calls, so a session
//! reads the log sequentially; it takes the ledger's lock only to learn
//! where to read and to drop what was retired meanwhile, never during I/O.
//! Its calls block on file reads (from the page cache, usually): callers
//! on an async runtime run them with `spawn_blocking`.

use super::frame::{self, Batch, FILE_HEADER};
use super::ledger::Ledger;
use super::segment::{self, ReadError};
use super::{Queued, Seq, Unreadable};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::RwLock;

/// Where a reader is: a frame boundary in a segment.
struct Place {
    segment: Seq,
    file: File,
    offset: u64,
}

pub struct Reader {
    dir: PathBuf,
    /// The next sequence number to hand out.
    next: Seq,
    place: Option<Place>,
}

/// What the ledger says about the segment a read happens in.
struct Span {
    first: Seq,
    end: Seq,
    len: u64,
    hint: Option<(u64, Seq)>,
}

impl Reader {
    /// A reader of the segments in `dir` from `from` on.
    pub fn new(dir: PathBuf, from: Seq) -> Reader {
        Reader {
            dir,
            next: from,
            place: None,
        }
    }

    /// The sequence number the next read starts at.
    pub fn position(&self) -> Seq {
        self.next
    }

    /// Up to `limit` messages from the reader's position, in order, those
    /// retired left out. Damage (a frame that does not read back) comes as
    /// one [`Unreadable`] for the part of its segment that is lost.
    pub fn read(
        &mut self,
        ledger: &RwLock<Ledger>,
        limit: usize,
    ) -> io::Result<Vec<Result<Queued, Unreadable>>> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(span) = self.span(ledger) else {
                break;
            };
            match self.read_span(&span, limit - out.len(), &mut out) {
                Ok(()) => {}
                Err(ReadError::End) => {
                    if self.next >= span.end {
                        continue;
                    }
                    // The segment ended short of its messages: nothing more
                    // of it is readable.
                    self.lose(
                        &span,
                        "the segment ends before its last messages".into(),
                        &mut out,
                    );
                }
                Err(ReadError::Damaged(e)) => {
                    self.lose(&span, format!("damaged frame: {e}"), &mut out);
                }
                Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                    // Deleted meanwhile: it was retired; look again.
                    self.place = None;
                    if self.span(ledger).is_some_and(|s| s.first == span.first) {
                        return Err(e);
                    }
                }
                Err(ReadError::Io(e)) => return Err(e),
            }
        }
        let l = read(ledger);
        out.retain(|item| match item {
            Ok(q) => !l.is_retired(q.seq),
            Err(lost) => (lost.first..lost.end).any(|seq| !l.is_retired(seq)),
        });
        Ok(out)
    }

    /// Where the next message is, from the ledger; `None` when there is
    /// nothing durable to read.
    fn span(&mut self, ledger: &RwLock<Ledger>) -> Option<Span> {
        let l = read(ledger);
        if self.next < l.watermark {
            self.next = l.watermark;
        }
        if self.next >= l.next_seq {
            return None;
        }
        let segment = l.segment_for(self.next)?;
        Some(Span {
            first: segment.first_seq,
            end: segment.end_seq,
            len: segment.len,
            hint: segment.start_for(self.next),
        })
    }

    fn read_span(
        &mut self,
        span: &Span,
        limit: usize,
        out: &mut Vec<Result<Queued, Unreadable>>,
    ) -> Result<(), ReadError> {
        let place = match self.place.take() {
            Some(place) if place.segment == span.first => place,
            _ => self.seek(span)?,
        };
        let place = self.place.insert(place);
        let mut taken = 0;
        while taken < limit && self.next < span.end {
            let frame = segment::read_frame(&place.file, place.offset, span.len).and_then(
                |(kind, body)| {
                    let len = (frame::FRAME_HEADER + body.len()) as u64;
                    if kind == frame::KIND_BATCH {
                        // Checked now, so that damage is found before any of
                        // the frame's messages are handed out.
                        Batch::decode(&body)?
                            .messages()
                            .try_for_each(|m| m.map(drop))?;
                    }
                    Ok((kind, body, len))
                },
            );
            let (kind, body, frame_len) = match frame {
                Ok(frame) => frame,
                Err(ReadError::Damaged(e)) => {
                    // Step over the damage to the next frame that reads.
                    match segment::resync_file(&place.file, place.offset, span.len, self.next)? {
                        Some((offset, first)) => {
                            out.push(Err(Unreadable {
                                first: self.next,
                                end: first,
                                reason: format!(
                                    "segment {}: damaged frame: {e}",
                                    segment::file_name(span.first)
                                ),
                            }));
                            self.next = first;
                            place.offset = offset;
                            continue;
                        }
                        None => return Err(ReadError::Damaged(e)),
                    }
                }
                Err(e) => return Err(e),
            };
            if kind != frame::KIND_BATCH {
                place.offset += frame_len;
                continue;
            }
            let batch = Batch::decode(&body)?;
            if batch.first_seq > self.next {
                out.push(Err(Unreadable {
                    first: self.next,
                    end: batch.first_seq,
                    reason: format!(
                        "segment {}: messages missing",
                        segment::file_name(span.first)
                    ),
                }));
                self.next = batch.first_seq;
            }
            let mut finished = true;
            for item in batch.messages() {
                let (seq, stored) = item?;
                if seq < self.next {
                    continue;
                }
                if taken == limit {
                    finished = false;
                    break;
                }
                out.push(Ok(Queued {
                    seq,
                    message: stored.message,
                    received_ms: stored.received_ms,
                }));
                taken += 1;
                self.next = seq + 1;
            }
            if finished {
                self.next = self.next.max(batch.end_seq());
                place.offset += frame_len;
            }
        }
        if self.next >= span.end {
            self.place = None;
        }
        Ok(())
    }

    /// Opens the segment and finds the frame that holds `self.next`.
    fn seek(&self, span: &Span) -> Result<Place, ReadError> {
        let file = File::open(segment::path_of(&self.dir, span.first))?;
        let mut offset = span.hint.map_or(FILE_HEADER as u64, |(offset, _)| offset);
        loop {
            match segment::peek_frame(&file, offset, span.len) {
                Ok((kind, len, seqs)) => {
                    if kind == frame::KIND_BATCH && seqs.is_some_and(|(_, end)| end > self.next) {
                        break;
                    }
                    offset += len;
                }
                Err(ReadError::Damaged(e)) => {
                    match segment::resync_file(&file, offset, span.len, 0)? {
                        // The damage is reported when the frames are read.
                        Some((next, first)) if first <= self.next => offset = next,
                        Some((_, _)) => break,
                        None => return Err(ReadError::Damaged(e)),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Place {
            segment: span.first,
            file,
            offset,
        })
    }

    /// Reports the rest of the span as lost and moves past it.
    fn lose(&mut self, span: &Span, reason: String, out: &mut Vec<Result<Queued, Unreadable>>) {
        out.push(Err(Unreadable {
            first: self.next,
            end: span.end,
            reason: format!("segment {}: {reason}", segment::file_name(span.first)),
        }));
        self.next = span.end;
        self.place = None;
    }
}

fn read(ledger: &RwLock<Ledger>) -> std::sync::RwLockReadGuard<'_, Ledger> {
    ledger.read().unwrap_or_else(|p| p.into_inner())
}
