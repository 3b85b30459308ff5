//! `FaultProxy`: a TCP proxy between the daemon and the broker that can
//! break the network on command, to test what the uplink does when the
//! broker is unreachable, refuses connections, or stops answering.
//!
//! Modes, switchable at any time with [`FaultProxy::set_mode`], which
//! returns once the mode is in force:
//! - `Pass`: forward both ways.
//! - `Refuse`: close every open connection and the listening socket, so new
//!   connects get "connection refused" (an RST from the kernel). The next
//!   `Pass`/`Blackhole`/`Stall` binds the same port again: std's
//!   `TcpListener::bind` sets SO_REUSEADDR on Unix, so connections left in
//!   TIME_WAIT do not block it. Rebinding is retried for a while in case
//!   another socket grabbed the port meanwhile; it panics if that persists.
//!   Open connections are closed with FIN (std cannot set SO_LINGER 0 for
//!   an RST); the peer sees end-of-stream.
//! - `Blackhole`: accept new connections and keep all open, but forward
//!   nothing either way: bytes read are discarded. Like a silent network,
//!   only keep-alive timeouts notice it. A connection that lost bytes can
//!   never carry a valid stream again, so it stays blackholed even after
//!   `Pass`; connections opened after `Pass` work.
//! - `Stall`: like `Blackhole`, but bytes are held back instead of lost and
//!   flow again on `Pass`, like a partition that heals before TCP gives up.
//!
//! Design: std threads only; an acceptor thread polling a non-blocking
//! listener, and two pump threads per connection. Drop stops and joins
//! them all.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::WAIT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Refuse,
    Blackhole,
    Stall,
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted (in any mode).
    pub accepted: u64,
    /// Client connections currently open.
    pub open: u64,
    /// Bytes written to the other side, both directions.
    pub bytes_forwarded: u64,
    /// Bytes thrown away in `Blackhole` mode, both directions.
    pub bytes_discarded: u64,
}

pub struct FaultProxy {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    port: u16,
    upstream: SocketAddr,
    stop: AtomicBool,
    state: Mutex<State>,
    /// Signalled on every mode change, for stalled pumps.
    mode_changed: Condvar,
    accepted: AtomicU64,
    bytes_forwarded: AtomicU64,
    bytes_discarded: AtomicU64,
}

struct State {
    mode: Mode,
    listener: Option<TcpListener>,
    connections: Vec<Connection>,
    pumps: Vec<JoinHandle<()>>,
}

struct Connection {
    id: u64,
    client: TcpStream,
    upstream: Option<TcpStream>,
    blackholed: Arc<AtomicBool>,
}

impl Connection {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(upstream) = &self.upstream {
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

impl FaultProxy {
    /// A proxy in `Pass` mode on a free 127.0.0.1 port forwarding to
    /// 127.0.0.1:`upstream_port`.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy's listening socket");
        let port = listener.local_addr().expect("proxy local_addr").port();
        listener
            .set_nonblocking(true)
            .expect("set the proxy listener non-blocking");
        let shared = Arc::new(Shared {
            port,
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                mode: Mode::Pass,
                listener: Some(listener),
                connections: Vec::new(),
                pumps: Vec::new(),
            }),
            mode_changed: Condvar::new(),
            accepted: AtomicU64::new(0),
            bytes_forwarded: AtomicU64::new(0),
            bytes_discarded: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-{port}-accept"))
                .spawn(move || accept_loop(&shared))
                .expect("spawn the proxy acceptor thread")
        };
        FaultProxy {
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port clients should connect to.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.shared.port))
    }

    pub fn mode(&self) -> Mode {
        self.shared.lock().mode
    }

    /// Switches mode; when this returns, the new mode is in force (e.g. the
    /// listening socket is closed for `Refuse`, bound again for the others).
    pub fn set_mode(&self, mode: Mode) {
        let mut state = self.shared.lock();
        state.mode = mode;
        match mode {
            Mode::Refuse => {
                state.listener = None;
                for connection in state.connections.drain(..) {
                    connection.close();
                }
            }
            Mode::Pass | Mode::Blackhole | Mode::Stall => {
                if state.listener.is_none() {
                    state.listener = Some(rebind(self.shared.port));
                }
                if mode == Mode::Blackhole {
                    for connection in &state.connections {
                        connection.blackholed.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        self.shared.mode_changed.notify_all();
    }

    pub fn stats(&self) -> ProxyStats {
        let open = self.shared.lock().connections.len() as u64;
        ProxyStats {
            accepted: self.shared.accepted.load(Ordering::SeqCst),
            open,
            bytes_forwarded: self.shared.bytes_forwarded.load(Ordering::SeqCst),
            bytes_discarded: self.shared.bytes_discarded.load(Ordering::SeqCst),
        }
    }

    /// Client connections accepted since start.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let pumps = {
            let mut state = self.shared.lock();
            state.listener = None;
            for connection in state.connections.drain(..) {
                connection.close();
            }
            std::mem::take(&mut state.pumps)
        };
        self.shared.mode_changed.notify_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking pump must not take the whole proxy (and its Drop) down.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn rebind(port: u16) -> TcpListener {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .expect("set the proxy listener non-blocking");
                return listener;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("proxy: rebinding 127.0.0.1:{port} failed ({e}), retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("proxy: cannot bind 127.0.0.1:{port} again within {WAIT:?}: {e}"),
        }
    }
}

fn accept_loop(shared: &Arc<Shared>) {
    let mut next_id = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = {
            let state = shared.lock();
            match &state.listener {
                Some(listener) => match listener.accept() {
                    Ok((stream, _)) => Some(stream),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                    Err(e) => {
                        eprintln!("proxy {}: accept failed: {e}", shared.port);
                        None
                    }
                },
                None => None,
            }
        };
        match accepted {
            Some(client) => {
                next_id += 1;
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                open_connection(shared, next_id, client);
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn open_connection(shared: &Arc<Shared>, id: u64, client: TcpStream) {
    // Accepted sockets can inherit non-blocking mode on some platforms.
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let _ = client.set_nodelay(true);
    let mode = shared.lock().mode;
    let blackholed = Arc::new(AtomicBool::new(mode == Mode::Blackhole));
    // A blackholed connection never forwards, so it needs no upstream.
    let upstream = if mode == Mode::Blackhole {
        None
    } else {
        match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) {
            Ok(upstream) => {
                let _ = upstream.set_nodelay(true);
                Some(upstream)
            }
            Err(e) => {
                eprintln!(
                    "proxy {}: upstream {} unreachable: {e}",
                    shared.port, shared.upstream
                );
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
        }
    };

    let clone = |s: &TcpStream| s.try_clone().expect("clone a proxied TCP stream");
    let mut state = shared.lock();
    if state.mode == Mode::Refuse || shared.stop.load(Ordering::SeqCst) {
        // The mode changed while we were connecting upstream.
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    state.pumps.retain(|pump| !pump.is_finished());
    let mut pumps = vec![];
    match &upstream {
        Some(up) => {
            pumps.push((clone(&client), Some(clone(up)), "up"));
            pumps.push((clone(up), Some(clone(&client)), "down"));
        }
        // Blackholed from birth: read and discard what the client sends.
        None => pumps.push((clone(&client), None, "up")),
    }
    for (from, to, direction) in pumps {
        let shared = Arc::clone(shared);
        let blackholed = Arc::clone(&blackholed);
        let pump = std::thread::Builder::new()
            .name(format!("proxy-{}-{id}-{direction}", shared.port))
            .spawn(move || pump(&shared, id, from, to, &blackholed))
            .expect("spawn a proxy pump thread");
        state.pumps.push(pump);
    }
    state.connections.push(Connection {
        id,
        client,
        upstream,
        blackholed,
    });
}

/// Copies `from` to `to` according to the mode until either side closes.
fn pump(
    shared: &Shared,
    id: u64,
    mut from: TcpStream,
    mut to: Option<TcpStream>,
    blackholed: &AtomicBool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !deliver(shared, &buffer[..n], to.as_mut(), blackholed) {
            break;
        }
    }
    // One direction ended: end the whole connection, as a proxy would.
    let mut state = shared.lock();
    if let Some(position) = state.connections.iter().position(|c| c.id == id) {
        state.connections.remove(position).close();
    }
}

/// Forwards, discards or holds one chunk; false when the connection is over.
fn deliver(
    shared: &Shared,
    chunk: &[u8],
    to: Option<&mut TcpStream>,
    blackholed: &AtomicBool,
) -> bool {
    let mut state = shared.lock();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        if blackholed.load(Ordering::SeqCst) {
            shared
                .bytes_discarded
                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            return true;
        }
        match state.mode {
            Mode::Refuse => return false,
            Mode::Stall => {
                state = shared
                    .mode_changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            Mode::Blackhole => {
                blackholed.store(true, Ordering::SeqCst);
            }
            Mode::Pass => {
                drop(state);
                let Some(to) = to else { return false };
                if to.write_all(chunk).is_err() {
                    return false;
                }
                shared
                    .bytes_forwarded
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                return true;
            }
        }
    }
}
