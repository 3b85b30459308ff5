//! The commands' journal: `<store>/commands.log`, what the mailbox is
//! rebuilt from after a restart or a power cut.
//!
//! An append-only file of frames `len: u32 | crc32: u32 | body`, each
//! fsynced (fdatasync) before the caller acts on it: a command is journaled
//! before its PUBLISH is acknowledged to the broker, and its end (done,
//! failed, expired) before the device or the application is told. A torn or
//! damaged tail (a cut in the middle of a write) ends the replay there and
//! is cut off, so later frames follow whole ones. When ended commands make
//! up most of the file it is rewritten with the live ones only (to a
//! temporary file, synced, renamed over, the directory synced), so its size
//! follows the mailbox, not the gateway's age.
//!
//! Written by hand: the frames are a few dozen lines, and the queue's own
//! log (`store/`) is built for a different job (ordered, group-committed
//! messages for one consumer).

use super::{Command, Delivery, Status};
use crate::route::Method;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const QUEUED: u8 = 1;
const ENDED: u8 = 2;
/// A frame longer than this is damage, not a command.
const MAX_FRAME: u32 = 1 << 20;

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Frames in the file that no longer matter (ended commands and their
    /// end frames).
    stale: usize,
    live: usize,
    next_id: u64,
}

/// What the journal held at open.
pub struct Replayed {
    pub journal: Journal,
    /// Live commands, in the order they were journaled.
    pub commands: Vec<Command>,
    /// Bytes cut off a torn or damaged tail.
    pub cut: u64,
}

impl Journal {
    pub fn open(path: &Path) -> io::Result<Replayed> {
        let mut bytes = Vec::new();
        let existed = match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        let mut commands: Vec<Command> = Vec::new();
        let mut stale = 0;
        let mut next_id = 1;
        let mut at = 0usize;
        while let Some((body, end)) = frame_at(&bytes, at) {
            match decode(body) {
                Some(Entry::Queued(command)) => {
                    next_id = next_id.max(command.id + 1);
                    commands.push(command);
                }
                Some(Entry::Ended { id, .. }) => {
                    if let Some(i) = commands.iter().position(|c| c.id == id) {
                        commands.remove(i);
                        stale += 1;
                    }
                    stale += 1;
                    next_id = next_id.max(id + 1);
                }
                None => break,
            }
            at = end;
        }
        let cut = (bytes.len() - at) as u64;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        if cut > 0 {
            file.set_len(at as u64)?;
            file.sync_data()?;
        }
        if !existed {
            file.sync_all()?;
            sync_parent(path)?;
        }
        let live = commands.len();
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
            stale,
            live,
            next_id,
        };
        use std::io::Seek;
        journal.file.seek(io::SeekFrom::End(0))?;
        Ok(Replayed {
            journal,
            commands,
            cut,
        })
    }

    /// The id the next command gets.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Journals a new command; on disk when this returns `Ok`.
    pub fn queued(&mut self, command: &Command) -> io::Result<()> {
        self.append(&encode_queued(command))?;
        self.live += 1;
        Ok(())
    }

    /// Journals the end of commands (done, failed, expired); on disk when
    /// this returns `Ok`. Rewrites the file when most of it is stale;
    /// `live` gives the commands still pending for that.
    pub fn ended<'c>(
        &mut self,
        ends: &[(u64, Status)],
        live: impl Iterator<Item = &'c Command>,
    ) -> io::Result<()> {
        if ends.is_empty() {
            return Ok(());
        }
        let mut frames = Vec::new();
        for (id, status) in ends {
            let mut body = vec![ENDED];
            body.extend_from_slice(&id.to_be_bytes());
            body.push(status.code());
            put_frame(&mut frames, &body);
        }
        self.file.write_all(&frames)?;
        self.file.sync_data()?;
        self.stale += 2 * ends.len();
        self.live = self.live.saturating_sub(ends.len());
        if self.stale > 1_000 && self.stale > 4 * self.live {
            self.compact(live)?;
        }
        Ok(())
    }

    fn append(&mut self, body: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(body.len() + 8);
        put_frame(&mut frame, body);
        self.file.write_all(&frame)?;
        self.file.sync_data()
    }

    /// Rewrites the file with `live` only.
    fn compact<'c>(&mut self, live: impl Iterator<Item = &'c Command>) -> io::Result<()> {
        let tmp = self.path.with_extension("log.compacting");
        let mut out = Vec::new();
        let mut n = 0;
        for command in live {
            put_frame(&mut out, &encode_queued(command));
            n += 1;
        }
        // The highest id handed out must survive even if every command
        // ended: an id is never reused.
        let mut keep = vec![ENDED];
        keep.extend_from_slice(&(self.next_id.saturating_sub(1)).to_be_bytes());
        keep.push(Status::Done.code());
        put_frame(&mut out, &keep);
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        sync_parent(&self.path)?;
        let mut file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        use std::io::Seek;
        file.seek(io::SeekFrom::End(0))?;
        self.file = file;
        self.live = n;
        self.stale = 1;
        Ok(())
    }

    /// The file's size, for tests and status.
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

enum Entry {
    Queued(Command),
    Ended {
        id: u64,
        #[allow(dead_code)]
        status: Status,
    },
}

fn put_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
}

/// The body of the whole frame at `at`, and where the next one starts.
fn frame_at(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at + 8)?;
    let len = u32::from_be_bytes(header[..4].try_into().ok()?);
    let crc = u32::from_be_bytes(header[4..].try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let end = at + 8 + len as usize;
    let body = bytes.get(at + 8..end)?;
    (crc32fast::hash(body) == crc).then_some((body, end))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
        None => out.push(0),
    }
}

fn encode_queued(c: &Command) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + c.payload.len());
    out.push(QUEUED);
    out.extend_from_slice(&c.id.to_be_bytes());
    out.extend_from_slice(&c.created_ms.to_be_bytes());
    out.extend_from_slice(&c.expires_ms.to_be_bytes());
    out.push(method_code(c.method));
    out.push(c.delivery.code());
    out.push(u8::from(c.identity_required));
    out.extend_from_slice(&c.awake_s.to_be_bytes());
    put_bytes(&mut out, c.device.as_bytes());
    put_bytes(&mut out, c.resource.as_bytes());
    put_bytes(&mut out, &c.payload);
    put_optional(&mut out, c.result_topic.as_deref().map(str::as_bytes));
    put_optional(&mut out, c.correlation.as_deref());
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
        self.take(len as usize)
    }
    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn optional(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?)),
            _ => None,
        }
    }
}

fn decode(body: &[u8]) -> Option<Entry> {
    let mut r = Reader(body);
    match r.u8()? {
        QUEUED => {
            let id = r.u64()?;
            let created_ms = r.u64()?;
            let expires_ms = r.u64()?;
            let method = method_from(r.u8()?)?;
            let delivery = Delivery::from_code(r.u8()?)?;
            let identity_required = r.u8()? == 1;
            let awake_s = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
            let device = r.text()?;
            let resource = r.text()?;
            let payload = r.bytes()?.to_vec();
            let result_topic = match r.optional()? {
                Some(b) => Some(String::from_utf8(b.to_vec()).ok()?),
                None => None,
            };
            let correlation = r.optional()?.map(<[u8]>::to_vec);
            Some(Entry::Queued(Command {
                id,
                device,
                resource,
                method,
                payload,
                created_ms,
                expires_ms,
                delivery,
                result_topic,
                correlation,
                identity_required,
                awake_s,
            }))
        }
        ENDED => {
            let id = r.u64()?;
            let status = Status::from_code(r.u8()?)?;
            Some(Entry::Ended { id, status })
        }
        _ => None,
    }
}

fn method_code(method: Method) -> u8 {
    Method::ALL.iter().position(|m| *m == method).unwrap_or(0) as u8
}

fn method_from(code: u8) -> Option<Method> {
    Method::ALL.get(code as usize).copied()
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: u64, device: &str) -> Command {
        Command {
            id,
            device: device.into(),
            resource: "config/interval".into(),
            method: Method::Put,
            payload: b"60".to_vec(),
            created_ms: 1_000,
            expires_ms: 3_601_000,
            delivery: Delivery::Poll,
            result_topic: Some("cmdres/gw/v1".into()),
            correlation: Some(vec![0, 1, 2]),
            identity_required: false,
            awake_s: 30,
        }
    }

    #[test]
    fn queued_commands_come_back_and_ended_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commands.log");
        {
            let mut j = Journal::open(&path).expect("open").journal;
            for device in ["a", "b", "c"] {
                let id = j.next_id();
                j.queued(&command(id, device)).expect("queued");
            }
            j.ended(&[(2, Status::Done)], std::iter::empty())
                .expect("ended");
        }
        let replayed = Journal::open(&path).expect("reopen");
        let devices: Vec<&str> = replayed
            .commands
            .iter()
            .map(|c| c.device.as_str())
            .collect();
        assert_eq!(devices, ["a", "c"]);
        assert_eq!(replayed.commands[0], command(1, "a"));
        let mut journal = replayed.journal;
        assert_eq!(journal.next_id(), 4, "ids are never reused");
    }

    #[test]
    fn a_torn_tail_is_cut_and_what_came_before_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commands.log");
        {
            let mut j = Journal::open(&path).expect("open").journal;
            j.queued(&command(1, "a")).expect("queued");
            j.queued(&command(2, "b")).expect("queued");
        }
        let full = std::fs::metadata(&path).expect("meta").len();
        for keep in [full - 1, full - 20, 10] {
            let bytes = std::fs::read(&path).expect("read");
            let torn = dir.path().join(format!("torn-{keep}.log"));
            std::fs::write(&torn, &bytes[..keep as usize]).expect("write");
            let replayed = Journal::open(&torn).expect("opens");
            assert!(replayed.commands.len() <= 1, "keep {keep}");
            assert!(replayed.cut > 0);
            // What follows a cut is readable.
            let mut j = replayed.journal;
            j.queued(&command(9, "z")).expect("queued");
            drop(j);
            let again = Journal::open(&torn).expect("reopens");
            assert_eq!(again.commands.last().map(|c| c.id), Some(9));
            assert_eq!(again.cut, 0);
        }
    }

    #[test]
    fn a_mostly_stale_journal_is_rewritten_with_the_live_commands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commands.log");
        let mut j = Journal::open(&path).expect("open").journal;
        let keep = command(j.next_id(), "keep");
        j.queued(&keep).expect("queued");
        let mut written = 0;
        for _ in 0..1_200 {
            let c = command(j.next_id(), "x");
            let before = j.len().expect("len");
            j.queued(&c).expect("queued");
            written += j.len().expect("len") - before;
            j.ended(&[(c.id, Status::Expired)], std::iter::once(&keep))
                .expect("ended");
        }
        // Compacted at least once (at 1,000 stale frames): well under
        // what was written.
        let len = j.len().expect("len");
        assert!(len < written / 2, "{len} of {written}");
        drop(j);
        let replayed = Journal::open(&path).expect("reopen");
        assert_eq!(replayed.commands, [keep]);
        let mut j = replayed.journal;
        assert_eq!(j.next_id(), 1_202);
    }

    #[test]
    fn garbage_is_not_a_command() {
        for body in [
            &[][..],
            &[QUEUED, 1, 2],
            &[ENDED, 0, 0, 0, 0, 0, 0, 0, 1, 99],
            &[7],
        ] {
            assert!(decode(body).is_none(), "{body:?}");
        }
    }
}
