//! The release daemon under test: its config in a temp dir, its store in a
//! temp dir on the same disk, readiness by CoAP ping, RSS from /proc.

use super::{sigterm, wait_or_kill};
use crate::coap::{self, MsgType};
use anyhow::Context;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the driver varies in the daemon's config.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub coap_port: u16,
    pub mqtt_port: u16,
    pub inflight: u16,
    pub commit_max_batch: usize,
    pub store_path: PathBuf,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// A DTLS-PSK listener too.
    pub dtls: Option<DtlsListener>,
    /// The admin endpoint (/metrics) on this port; off when `None`.
    pub admin_port: Option<u16>,
    /// `mqtt.protocol`; the daemon's default (`auto`) when `None`.
    pub protocol: Option<&'static str>,
    /// A command table (push): `cmd/bench/{device}/{resource*}`, results
    /// to `cmdres/bench/{device}`.
    pub commands: bool,
}

/// The DTLS-PSK listener of a bench daemon: room for the 10,000-session
/// phase, and no rate limit on new peers so handshakes per second measure
/// the handshake itself (the shipped default allows 1,000 new peers/s).
#[derive(Debug, Clone)]
pub struct DtlsListener {
    pub port: u16,
    pub psk_file: PathBuf,
}

impl DtlsListener {
    fn render(&self) -> String {
        format!(
            "[dtls]\nlisten = [\"127.0.0.1:{port}\"]\npsk_file = \"{psk}\"\n\
             max_sessions = 12000\nmax_handshakes = 256\nnew_peers_per_s = 1000000\n\
             handshake_timeout_s = 10\nidle_timeout_s = 600\n\n",
            port = self.port,
            psk = self.psk_file.display(),
        )
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl DaemonConfig {
    /// Two routes to the same topics, QoS 1: `bench/{run}/{device}` passes
    /// the payload as it is, `json/{run}/{device}` translates it to JSON.
    /// The driver gives every run its own `{run}` so the subscriber can
    /// tell runs apart.
    ///
    /// Each daemon's MQTT client id is its own (from its directory's name):
    /// two daemons of one run with the same id take the broker session from
    /// each other, and the comparisons that keep two daemons up measured
    /// that flapping, not the daemons.
    pub fn render(&self) -> String {
        let name = self
            .store_path
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(
            "# written by the coap2mqtt bench driver\n\
             [gateway]\nid = \"bench\"\n\n\
             [coap]\nlisten = [\"127.0.0.1:{coap}\"]\n\n\
             {dtls}\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt}\"\nclient_id = \"coap2mqtt-bench-{name}\"\n\
             inflight = {inflight}\nreconnect_min_ms = 100\nreconnect_max_s = 1\n{protocol}\n\
             [store]\npath = \"{store}\"\nmax_messages = 4000000\nmax_bytes = 8589934592\n\
             commit_max_batch = {batch}\n\n\
             [log]\nlevel = \"info\"\n\n\
             [admin]\nlisten = \"{admin}\"\n\n\
             [[route]]\nresource = \"bench/{{run}}/{{device}}\"\ntopic = \"bench/{{run}}/{{device}}\"\nqos = 1\n\n\
             [[route]]\nresource = \"json/{{run}}/{{device}}\"\ntopic = \"bench/{{run}}/{{device}}\"\nqos = 1\npayload = \"json\"\n\n\
             {commands}",
            commands = match self.commands {
                true => "[[command]]\ntopic = \"cmd/{gateway}/{device}/{resource*}\"\n\
                         result_topic = \"cmdres/{gateway}/{device}\"\n",
                false => "",
            },
            coap = self.coap_port,
            mqtt = self.mqtt_port,
            inflight = self.inflight,
            store = self.store_path.display(),
            batch = self.commit_max_batch,
            protocol = self
                .protocol
                .map(|p| format!("protocol = \"{p}\"\n"))
                .unwrap_or_default(),
            dtls = self.dtls.as_ref().map(DtlsListener::render).unwrap_or_default(),
            admin = self
                .admin_port
                .map(|p| format!("127.0.0.1:{p}"))
                .unwrap_or_default(),
        )
    }
}

pub struct Daemon {
    binary: PathBuf,
    dir: PathBuf,
    pub config: DaemonConfig,
    child: Option<Child>,
    /// Seconds from spawn to the first RST to a CoAP ping, last start.
    pub ready_after: Duration,
}

impl Daemon {
    pub fn start(binary: &Path, dir: &Path, config: DaemonConfig) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("coap2mqtt.toml"), config.render())?;
        let mut d = Daemon {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            config,
            child: None,
            ready_after: Duration::ZERO,
        };
        d.launch()?;
        Ok(d)
    }

    pub fn coap_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.coap_port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))?;
        let started = Instant::now();
        let child = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(self.dir.join("coap2mqtt.toml"))
            .env_remove("RUST_LOG")
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        self.ready_after = self.wait_ready(started)?;
        Ok(())
    }

    /// Pings (empty CON) every 5 ms until an RST comes back.
    fn wait_ready(&mut self, started: Instant) -> anyhow::Result<Duration> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(self.coap_addr())?;
        socket.set_read_timeout(Some(Duration::from_millis(5)))?;
        let mut buf = [0u8; 64];
        let mut mid: u16 = 1;
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                anyhow::bail!(
                    "the daemon exited with {status} during start-up; log:\n{}",
                    self.log_tail()
                );
            }
            mid = mid.wrapping_add(1);
            let _ = socket.send(&coap::empty(MsgType::Con, mid));
            let deadline = Instant::now() + Duration::from_millis(5);
            while Instant::now() < deadline {
                if let Ok(n) = socket.recv(&mut buf) {
                    if let Some(h) = coap::parse_header(&buf[..n]) {
                        if h.mtype == MsgType::Rst {
                            return Ok(started.elapsed());
                        }
                    }
                } else {
                    break;
                }
            }
        }
        anyhow::bail!("the daemon did not answer a CoAP ping within 60 s")
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> bool {
        match self.child.take() {
            Some(mut child) => {
                sigterm(&child);
                wait_or_kill(&mut child, Duration::from_secs(20))
            }
            None => true,
        }
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The daemon's log lines at warn or error level (for the report).
    pub fn warnings(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("daemon.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The daemon's /metrics text (empty when its admin endpoint is off or
/// does not answer).
pub fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

/// (p50, p99) of a Prometheus histogram in its text form, as the upper
/// bounds of the buckets they fall in, in the histogram's unit.
pub fn histogram_quantiles(metrics: &str, name: &str) -> Option<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map(|(le, _)| *le)
    };
    Some((at(0.5)?, at(0.99)?))
}

/// VmRSS of a process in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// A size line of /proc/PID/status (`VmRSS:`, `RssAnon:`, `RssFile:`), in
/// bytes.
pub fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Samples a process's RSS every 50 ms and keeps the peak since the last
/// [`RssSampler::take_peak`].
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    pub fn take_peak(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Disk usage of a directory tree: (allocated bytes as du counts them,
/// apparent bytes).
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut allocated = 0;
    let mut apparent = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                allocated += m.blocks() * 512;
                apparent += m.len();
            }
        }
    }
    (allocated, apparent)
}
