//! The admin socket: a Unix socket through which an operator reads the dead
//! letters and changes the queue (requeue, purge). The TCP endpoint stays
//! read-only and never shows a message; this socket does, so who may use it
//! is decided by the file system:
//!
//! - the socket is mode 0660 and, when the group `coap2mqtt` exists, of
//!   that group; a directory the daemon creates for it is 0750 (under
//!   systemd, RuntimeDirectory=coap2mqtt with RuntimeDirectoryMode=0750):
//!   root and that group's members can connect, nobody else;
//! - every change is logged with the peer's credentials (SO_PEERCRED: pid,
//!   uid, gid), the kernel's word on who asked.
//!
//! The language is `protocol.rs` (pure); this file is only the I/O around
//! it. Changes go to the committer as a command, like every other write;
//! the socket holds only a weak handle to it, so it never keeps the store
//! open past shutdown. Each connection is bounded in time and in request
//! size, and only a few are served at once.

use super::protocol::{self, Answer, Done, Letter, Plan, MAX_REQUEST};
use crate::store::{Action, Command, Queue, Which};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

/// The group whose members may use the socket (the packaged service's).
pub const GROUP: &str = "coap2mqtt";
/// Connections served at once.
const MAX_CONNECTIONS: usize = 4;
/// The longest a connection may live.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Binds the socket at `path` (when set) and serves it until `shutdown`.
/// A socket that cannot be made is logged and the daemon runs on without
/// it, as with the TCP endpoint.
pub async fn spawn<R: Send + 'static>(
    path: Option<PathBuf>,
    queue: Queue,
    store: mpsc::WeakSender<Command<R>>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(path) = path else {
        log::info!("admin: socket off (admin.socket = \"\")");
        return;
    };
    match bind(&path).await {
        Ok(listener) => {
            log::info!(
                "admin: dead letters (list, show, requeue, purge) on the socket {}",
                path.display()
            );
            let socket = AdminSocket { queue, store, path };
            tokio::spawn(socket.serve(listener, shutdown));
        }
        // Outside the packaged unit, a user's daemon cannot write /run.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => log::warn!(
            "admin.socket {}: {e}; running without it (`coap2mqtt dead-letters` cannot reach \
             the daemon): set admin.socket to a path this user may create, or \"\" to turn it off",
            path.display()
        ),
        Err(e) => log::error!(
            "admin.socket {}: {e}; running without it (`coap2mqtt dead-letters` cannot reach \
             the daemon)",
            path.display()
        ),
    }
}

/// Makes the directory (0750) if missing, takes over a stale socket file
/// (never a live one: another daemon answering there keeps it), binds, and
/// sets the socket's mode and group.
async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
            set_group(dir);
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process answers on this socket (another coap2mqtt?)",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket; remove it or choose another admin.socket",
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    set_group(path);
    Ok(listener)
}

/// Gives `path` to the group [`GROUP`] when it exists and we may (root, or
/// a member): best effort, the mode alone already keeps others out.
fn set_group(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Some(gid) = group_id(GROUP) else {
        return;
    };
    // Under the packaged unit it is already the service's group (and the
    // unit's system call filter refuses chown).
    if std::fs::metadata(path).is_ok_and(|m| m.gid() == gid) {
        return;
    }
    if let Err(e) = std::os::unix::fs::chown(path, None, Some(gid)) {
        log::debug!(
            "admin: {} left in its group (not {GROUP}): {e}",
            path.display()
        );
    }
}

/// The id of group `name` in /etc/group, where systemd-sysusers puts it.
fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    group_id_in(&groups, name)
}

fn group_id_in(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let found = fields.next()? == name;
        let gid = fields.nth(1)?.parse().ok()?;
        found.then_some(gid)
    })
}

struct AdminSocket<R> {
    queue: Queue,
    store: mpsc::WeakSender<Command<R>>,
    path: PathBuf,
}

/// Who is on the other end, as the kernel says (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
struct Peer {
    pid: Option<i32>,
    uid: u32,
    gid: u32,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid} uid {} gid {}", self.uid, self.gid),
            None => write!(f, "uid {} gid {}", self.uid, self.gid),
        }
    }
}

impl<R: Send + 'static> AdminSocket<R> {
    async fn serve(self, listener: UnixListener, mut shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.changed() => break,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        log::warn!("admin: socket accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let this = this.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::timeout(CONNECTION_LIFETIME, this.connection(stream)) => {}
                    _ = stop.changed() => {}
                }
                drop(permit);
            });
        }
        let _ = std::fs::remove_file(&this.path);
    }

    /// Answers each request line of one connection until it closes.
    async fn connection(&self, stream: UnixStream) {
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                pid: c.pid(),
                uid: c.uid(),
                gid: c.gid(),
            },
            Err(e) => {
                log::warn!("admin: socket peer without credentials, closed: {e}");
                return;
            }
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut lines)
                .take(MAX_REQUEST as u64 + 1)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let answer = if line.len() > MAX_REQUEST {
                Answer::refused(format!("a request may be at most {MAX_REQUEST} bytes"))
            } else {
                match std::str::from_utf8(&line).map_err(|_| "not UTF-8".to_string()) {
                    Ok(text) => match protocol::plan(text) {
                        Ok(plan) => self.carry_out(plan, peer).await,
                        Err(why) => Answer::refused(why),
                    },
                    Err(why) => Answer::refused(why),
                }
            };
            if write.write_all(answer.line().as_bytes()).await.is_err() {
                return;
            }
            if line.len() > MAX_REQUEST || !line.ends_with(b"\n") {
                return;
            }
        }
    }

    async fn carry_out(&self, plan: Plan, peer: Peer) -> Answer {
        match plan {
            Plan::List { limit } => {
                let queue = self.queue.clone();
                // One letter in memory at a time: only its summary is kept.
                let letters = tokio::task::spawn_blocking(move || {
                    let mut letters = Vec::new();
                    queue.visit_dead_letters(limit, |d| letters.push(Letter::new(&d, false)));
                    letters
                })
                .await;
                match letters {
                    Ok(letters) => Answer::letters(letters),
                    Err(_) => Answer::refused("reading the dead letters failed"),
                }
            }
            Plan::Show { id } => {
                let queue = self.queue.clone();
                match tokio::task::spawn_blocking(move || queue.dead_letter(id)).await {
                    Ok(Some(letter)) => Answer::letter(Letter::new(&letter, true)),
                    Ok(None) => protocol::no_such_letter(id),
                    Err(_) => Answer::refused("reading the dead letter failed"),
                }
            }
            Plan::Decide { action, which } => self.decide(action, which, peer).await,
        }
    }

    /// Hands a requeue or purge to the committer and logs who asked and
    /// what came of it.
    async fn decide(&self, action: Action, which: Which, peer: Peer) -> Answer {
        let verb = match action {
            Action::Requeue => "requeue",
            Action::Purge => "purge",
        };
        let what = match &which {
            Which::All => "all dead letters".to_string(),
            Which::Ids(ids) => format!("dead letters {}", ids_text(ids)),
        };
        let Some(store) = self.store.upgrade() else {
            return Answer::refused("the daemon is stopping; nothing was changed");
        };
        let (reply, answer) = oneshot::channel();
        let sent = store
            .send(Command::DeadLetters {
                action,
                which,
                reply,
            })
            .await;
        drop(store);
        if sent.is_err() {
            return Answer::refused("the daemon is stopping; nothing was changed");
        }
        match answer.await {
            Ok(Ok(decided)) => {
                let done: Vec<Done> = decided.iter().map(Done::from).collect();
                let ids: Vec<u64> = done.iter().map(|d| d.id).collect();
                match action {
                    Action::Requeue => log::warn!(
                        "admin: {verb} of {what} asked by {peer} over the socket: {} put back at the tail of the queue ({})",
                        done.len(),
                        ids_text(&ids)
                    ),
                    Action::Purge => log::warn!(
                        "admin: {verb} of {what} asked by {peer} over the socket: {} deleted for good ({})",
                        done.len(),
                        ids_text(&ids)
                    ),
                }
                Answer::done(done)
            }
            Ok(Err(e)) => {
                log::warn!("admin: {verb} of {what} asked by {peer} over the socket refused: {e}");
                Answer::refused(e.to_string())
            }
            Err(_) => Answer::refused("the store stopped before answering; nothing was changed"),
        }
    }
}

/// Ids for a log line: the first 20, then how many more.
fn ids_text(ids: &[u64]) -> String {
    let shown: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
    match ids.len().saturating_sub(20) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_found_by_name_in_an_etc_group_file() {
        let groups = "root:x:0:\nbad line\ncoap2mqtt:x:997:alice,bob\n";
        assert_eq!(group_id_in(groups, "coap2mqtt"), Some(997));
        assert_eq!(group_id_in(groups, "root"), Some(0));
        assert_eq!(group_id_in(groups, "coap"), None);
        assert_eq!(group_id_in("coap2mqtt:x:notanumber:", "coap2mqtt"), None);
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn a_missing_directory_is_made_0750_and_the_socket_0660() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run").join("admin.sock");
        let _listener = bind(&path).await.expect("bound");
        assert_eq!(mode(&dir.path().join("run")), 0o750);
        assert_eq!(mode(&path), 0o660);
    }

    #[tokio::test]
    async fn a_stale_socket_is_taken_over_but_a_live_one_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.sock");
        let first = bind(&path).await.expect("bound");
        let refused = bind(&path).await.expect_err("someone answers there");
        assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse);
        drop(first); // the file stays, nobody answers: stale
        assert!(path.exists());
        let _second = bind(&path).await.expect("a stale socket is replaced");
        assert!(UnixStream::connect(&path).await.is_ok());
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_never_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.sock");
        std::fs::write(&path, "keep me").expect("write");
        let refused = bind(&path).await.expect_err("not a socket");
        assert_eq!(refused.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "keep me");
    }

    /// An admin socket over an empty store, and the committer's handle
    /// (the socket holds only a weak one).
    fn admin(dir: &Path) -> (AdminSocket<()>, crate::store::StoreHandle<()>) {
        let limits = crate::store::Limits {
            max_messages: 100,
            max_bytes: 1 << 20,
            on_full: crate::store::OnFull::Reject,
        };
        let queue = Queue::open(&dir.join("q"), limits).expect("opens").queue;
        let (store, _thread) =
            crate::store::spawn_committer::<()>(queue.clone(), 8, 8).expect("committer");
        let socket = AdminSocket {
            queue,
            store: store.downgrade(),
            path: dir.join("unused.sock"),
        };
        (socket, store)
    }

    async fn exchange(client: &mut UnixStream, line: &[u8]) -> Answer {
        client.write_all(line).await.expect("send");
        let mut answer = Vec::new();
        let mut reader = BufReader::new(client);
        reader.read_until(b'\n', &mut answer).await.expect("answer");
        serde_json::from_slice(&answer).expect("an answer line")
    }

    #[tokio::test]
    async fn garbage_is_refused_with_a_reason_and_the_connection_answers_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (socket, _store) = admin(dir.path());
        let (mut client, server) = UnixStream::pair().expect("pair");
        tokio::spawn(async move { socket.connection(server).await });
        let garbage = exchange(&mut client, b"\xff\xfe{not json\n").await;
        assert!(!garbage.ok);
        let unknown = exchange(&mut client, b"{\"op\":\"purge\",\"ids\":[7]}\n").await;
        assert!(unknown
            .error
            .expect("why")
            .contains("no dead letter has id 7"));
        let list = exchange(&mut client, b"{\"op\":\"list\"}\n").await;
        assert_eq!(list.letters, Some(Vec::new()));
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused_and_the_connection_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (socket, _store) = admin(dir.path());
        let (mut client, server) = UnixStream::pair().expect("pair");
        let served = tokio::spawn(async move { socket.connection(server).await });
        let huge = vec![b'x'; MAX_REQUEST + 10];
        let answer = exchange(&mut client, &huge).await;
        assert!(answer.error.expect("why").contains("at most"));
        served.await.expect("the connection ended");
    }

    #[tokio::test]
    async fn a_change_asked_while_the_store_is_gone_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (socket, store) = admin(dir.path());
        drop(store);
        let (mut client, server) = UnixStream::pair().expect("pair");
        tokio::spawn(async move { socket.connection(server).await });
        let answer = exchange(&mut client, b"{\"op\":\"requeue\",\"all\":true}\n").await;
        assert!(answer.error.expect("why").contains("stopping"));
    }

    #[test]
    fn long_id_lists_are_cut_in_log_lines() {
        let ids: Vec<u64> = (1..=25).collect();
        assert!(ids_text(&ids).ends_with("20 and 5 more"));
        assert_eq!(ids_text(&[3, 4]), "3, 4");
    }
}
