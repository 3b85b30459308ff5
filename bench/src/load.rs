//! The load generator: simulated devices sending CoAP requests to a server
//! and timing its answers.
//!
//! Each device is one task with one [`Link`] and at most one outstanding
//! request (RFC 7252 NSTART = 1). Two ways to load:
//! - closed loop: every device sends its next request as soon as the last
//!   one was answered, so concurrency = number of devices;
//! - open loop (`rate`): requests are scheduled at a fixed total rate spread
//!   evenly over the devices, and latency is measured from the *scheduled*
//!   send time, so a server that falls behind shows up as latency instead of
//!   silently lowering the offered load (no coordinated omission).
//!
//! CON requests are retransmitted as RFC 7252 §4.2 says (ACK_TIMEOUT 2 s,
//! ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4); an exchange that exhausts them
//! counts as a timeout. NON requests are not retransmitted: the daemon
//! answers them with a NON 2.04, which is what is counted; one not answered
//! within `non_timeout` counts as lost. With `no_response`, NON requests
//! carry No-Response (RFC 7967, all classes suppressed): nothing comes back,
//! so only the sent count is known here and deliveries must be counted at
//! the MQTT subscriber. That mode needs an offered rate.
//!
//! Latency, in microseconds in HDR histograms, is kept twice: from the
//! first transmission to the response (what a device waits: the figure the
//! targets are about), and, in open loop, from the scheduled send time to
//! the response. The second includes the generator's own lateness (tokio's
//! timer has millisecond resolution) and any backlog; if it is far above
//! the first, the generator, not the server, was behind.
//!
//! Throughput counts what was answered within the load window (`duration`),
//! so a retransmission tail after the window (2-3 s per lost datagram)
//! does not stretch a short run; a device stuck waiting to retransmit still
//! lowers it, as it should.

use crate::coap::{self, MsgType, Request};
use crate::link::{AnyLink, DtlsLink, Link, Transport, UdpLink};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::time::{sleep_until, timeout_at};

/// RFC 7252 §4.8 transmission parameters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Transmission {
    pub ack_timeout_ms: u64,
    pub ack_random_factor: f64,
    pub max_retransmit: u32,
}

impl Default for Transmission {
    fn default() -> Self {
        Transmission {
            ack_timeout_ms: 2000,
            ack_random_factor: 1.5,
            max_retransmit: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Post,
    Put,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadConfig {
    pub target: SocketAddr,
    pub transport: Transport,
    pub devices: usize,
    pub confirmable: bool,
    pub method: Method,
    pub payload: usize,
    /// Messages per second over all devices; `None` = closed loop.
    pub rate: Option<f64>,
    /// Stop starting requests after this long...
    pub duration: Duration,
    /// ...or after this many requests in total, whichever comes first.
    pub count: Option<u64>,
    /// Device `i` posts to `{path_prefix}/d{i}`.
    pub path_prefix: String,
    pub no_response: bool,
    pub non_timeout: Duration,
    /// How long outstanding exchanges may finish after the load stops.
    pub grace: Duration,
    pub transmission: Transmission,
    /// Connect every device, then hold the sessions idle this long and
    /// send nothing (to measure what idle sessions cost the server).
    pub idle_hold: Option<Duration>,
    /// Send CBOR (Content-Format 60) instead of opaque bytes: see
    /// [`cbor_payload`].
    pub cbor: bool,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Latency {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What a run did; printed as JSON by `coap-load`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct LoadReport {
    /// Wall clock (µs since the Unix epoch) of the first send, so another
    /// process (the bench driver's subscriber) can line its times up.
    pub started_unix_us: u64,
    /// Wall clock of the last response (or of the end, if none).
    pub last_response_unix_us: u64,
    /// Seconds from the first send to the last response.
    pub elapsed_s: f64,
    /// Exchanges started (first transmissions).
    pub sent: u64,
    /// Answered with 2.xx.
    pub ok: u64,
    /// Every response by code ("2.04": n, "5.03": n, "RST": n).
    pub responses: BTreeMap<String, u64>,
    pub retransmissions: u64,
    /// CON exchanges that exhausted MAX_RETRANSMIT.
    pub timeouts: u64,
    /// NON requests never answered within non_timeout.
    pub non_lost: u64,
    /// Exchanges still open when the grace period after the load ended.
    pub unanswered_at_end: u64,
    /// Open loop: sends that started more than 2 ms after their schedule.
    pub late_starts: u64,
    pub io_errors: u64,
    /// The load window (duration), seconds.
    pub window_s: f64,
    /// 2.xx answers that arrived within the window.
    pub ok_in_window: u64,
    /// ok_in_window / window_s for a timed run; ok / elapsed_s for a run
    /// bounded by --count; sent / window_s for No-Response.
    pub rate_ok_per_s: f64,
    /// From the first transmission to the response.
    pub latency_us: Latency,
    /// Open loop: from the scheduled send time to the response.
    pub latency_from_schedule_us: Latency,
    /// Devices connected before the load (DTLS: handshakes completed).
    #[serde(default)]
    pub connected: u64,
    /// Devices that could not connect (DTLS: failed handshakes).
    #[serde(default)]
    pub connect_failures: u64,
    /// Seconds from the first connect to the last one done.
    #[serde(default)]
    pub connect_s: f64,
    /// Requests the gateway pushed to the devices (commands), answered
    /// 2.04.
    #[serde(default)]
    pub commands_received: u64,
    /// From a command's publish (the time in its payload) to its arrival.
    #[serde(default)]
    pub command_latency_us: Latency,
    /// CPU time (user + system) the load generator itself used, in µs;
    /// filled in by the bench driver, which ran it.
    #[serde(default)]
    pub cpu_us: u64,
}

#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    ok: AtomicU64,
    ok_in_window: AtomicU64,
    retransmissions: AtomicU64,
    timeouts: AtomicU64,
    non_lost: AtomicU64,
    unanswered: AtomicU64,
    late: AtomicU64,
    io_errors: AtomicU64,
    last_response_us: AtomicU64,
    codes: Mutex<BTreeMap<String, u64>>,
    histogram: Mutex<Option<Histogram<u64>>>,
    from_schedule: Mutex<Option<Histogram<u64>>>,
    /// Requests left when a count is set.
    budget: Option<AtomicU64>,
    /// Requests the gateway pushed to the devices (commands), and from
    /// their publish time (their payload, µs since the epoch) to receipt.
    commands: AtomicU64,
    command_latency: Mutex<Option<Histogram<u64>>>,
}

impl Shared {
    fn take_ticket(&self) -> bool {
        match &self.budget {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    fn record_code(&self, name: String) {
        *self
            .codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default() += 1;
    }

    /// Moves (from send, from schedule) samples into the shared histograms.
    fn flush_latencies(&self, samples: &mut Vec<(u64, u64)>) {
        {
            let mut guard = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = guard.as_mut() {
                for s in samples.iter() {
                    h.saturating_record(s.0.max(1));
                }
            }
        }
        let mut guard = self.from_schedule.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = guard.as_mut() {
            for s in samples.iter() {
                h.saturating_record(s.1.max(1));
            }
        }
        samples.clear();
    }
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Runs the load and returns its report.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(config.devices > 0, "at least one device");
    anyhow::ensure!(
        !config.no_response || (!config.confirmable && config.rate.is_some()),
        "No-Response needs NON and an offered rate (nothing comes back to pace a closed loop)"
    );
    let histogram = Histogram::<u64>::new_with_bounds(1, 300_000_000, 3)?;
    let shared = Arc::new(Shared {
        histogram: Mutex::new(Some(histogram.clone())),
        from_schedule: Mutex::new(Some(histogram.clone())),
        command_latency: Mutex::new(Some(histogram)),
        budget: config.count.map(AtomicU64::new),
        ..Shared::default()
    });
    let config = Arc::new(config);

    // Connect every device first, so set-up is not part of the timing.
    let connect_started = Instant::now();
    let (links, connect_failures) = connect_all(&config).await?;
    let connect_s = connect_started.elapsed().as_secs_f64();
    let connected = links.len() as u64;
    anyhow::ensure!(
        connected > 0,
        "no device could connect ({connect_failures} failed)"
    );
    if let Some(hold) = config.idle_hold {
        // Tell a watching driver, then keep the sessions open and quiet.
        eprintln!(
            "coap-load: connected {connected} devices in {connect_s:.2} s; holding them idle"
        );
        tokio::time::sleep(hold).await;
        drop(links);
        return Ok(LoadReport {
            connected,
            connect_failures,
            connect_s,
            ..LoadReport::default()
        });
    }

    let start = Instant::now() + Duration::from_millis(20);
    let started_unix_us = unix_us() + 20_000;
    let deadline = start + config.duration;
    let mut tasks = Vec::with_capacity(links.len());
    for (i, link) in links.into_iter().enumerate() {
        let device = Device::new(i, link, config.clone(), shared.clone(), start, deadline);
        tasks.push(tokio::spawn(device.run()));
    }
    for t in tasks {
        t.await?;
    }
    let ended = unix_us();

    let take = |m: &Mutex<Option<Histogram<u64>>>| {
        m.lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("histogram taken once")
    };
    let h = take(&shared.histogram);
    let hs = take(&shared.from_schedule);
    let hc = take(&shared.command_latency);
    let last = shared.last_response_us.load(Ordering::Relaxed);
    let last = if last == 0 { ended } else { last };
    let elapsed_s = (last.saturating_sub(started_unix_us)) as f64 / 1e6;
    let ok = shared.ok.load(Ordering::Relaxed);
    let sent = shared.sent.load(Ordering::Relaxed);
    let ok_in_window = shared.ok_in_window.load(Ordering::Relaxed);
    let window_s = config.duration.as_secs_f64();
    let rate_ok_per_s = if config.no_response {
        sent as f64 / window_s
    } else if config.count.is_some() {
        ok as f64 / elapsed_s.max(1e-9)
    } else {
        ok_in_window as f64 / window_s
    };
    let responses = shared
        .codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(LoadReport {
        started_unix_us,
        last_response_unix_us: last,
        elapsed_s,
        sent,
        ok,
        responses,
        retransmissions: shared.retransmissions.load(Ordering::Relaxed),
        timeouts: shared.timeouts.load(Ordering::Relaxed),
        non_lost: shared.non_lost.load(Ordering::Relaxed),
        unanswered_at_end: shared.unanswered.load(Ordering::Relaxed),
        late_starts: shared.late.load(Ordering::Relaxed),
        io_errors: shared.io_errors.load(Ordering::Relaxed),
        window_s,
        ok_in_window,
        rate_ok_per_s,
        latency_us: Latency::of(&h),
        latency_from_schedule_us: Latency::of(&hs),
        connected,
        connect_failures,
        connect_s,
        commands_received: shared.commands.load(Ordering::Relaxed),
        command_latency_us: Latency::of(&hc),
        cpu_us: 0,
    })
}

/// Handshakes under way at once while connecting DTLS devices: enough to
/// keep both cores busy, few enough to stay under the server's limit.
const PARALLEL_HANDSHAKES: usize = 64;

/// Connects every device; DTLS devices handshake [`PARALLEL_HANDSHAKES`] at
/// a time. Returns the links and how many failed to connect.
async fn connect_all(config: &LoadConfig) -> anyhow::Result<(Vec<AnyLink>, u64)> {
    let mut links = Vec::with_capacity(config.devices);
    match &config.transport {
        Transport::Udp => {
            for _ in 0..config.devices {
                links.push(AnyLink::Udp(UdpLink::connect(config.target).await?));
            }
            Ok((links, 0))
        }
        Transport::Dtls {
            identity_prefix,
            key_hex,
        } => {
            let key = decode_hex(key_hex)?;
            let semaphore = Arc::new(tokio::sync::Semaphore::new(PARALLEL_HANDSHAKES));
            let mut handshakes = Vec::with_capacity(config.devices);
            for i in 0..config.devices {
                let permit = semaphore.clone().acquire_owned().await?;
                let (target, identity, key) =
                    (config.target, format!("{identity_prefix}{i}"), key.clone());
                handshakes.push(tokio::spawn(async move {
                    let link = DtlsLink::connect(target, &identity, &key).await;
                    drop(permit);
                    link
                }));
            }
            let mut failures = 0;
            for h in handshakes {
                match h.await? {
                    Ok(link) => links.push(AnyLink::Dtls(Box::new(link))),
                    Err(e) => {
                        if failures == 0 {
                            eprintln!("coap-load: {e}");
                        }
                        failures += 1;
                    }
                }
            }
            Ok((links, failures))
        }
    }
}

fn decode_hex(hex: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(hex.len().is_multiple_of(2), "odd-length hex key");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(Into::into))
        .collect()
}

/// How one exchange ended.
enum Outcome {
    Answered { code: u8, rst: bool },
    TimedOut,
    NonLost,
    Abandoned,
}

struct Device<L> {
    index: usize,
    link: L,
    config: Arc<LoadConfig>,
    shared: Arc<Shared>,
    start: Instant,
    deadline: Instant,
    mid: u16,
    seq: u64,
    path: Vec<String>,
    request: Vec<u8>,
    buf: Vec<u8>,
    samples: Vec<(u64, u64)>,
}

impl<L: Link> Device<L> {
    fn new(
        index: usize,
        link: L,
        config: Arc<LoadConfig>,
        shared: Arc<Shared>,
        start: Instant,
        deadline: Instant,
    ) -> Self {
        let mut path: Vec<String> = config
            .path_prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        path.push(format!("d{index}"));
        Device {
            index,
            link,
            config,
            shared,
            start,
            deadline,
            mid: rand::random(),
            seq: 0,
            path,
            request: Vec::with_capacity(128),
            buf: vec![0u8; 2048],
            samples: Vec::with_capacity(256),
        }
    }

    async fn run(mut self) {
        let interval = self
            .config
            .rate
            .map(|r| Duration::from_secs_f64(self.config.devices as f64 / r.max(1e-9)));
        // Stagger devices over one interval so the offered load is smooth.
        let mut next = match interval {
            Some(iv) => self.start + iv.mul_f64(self.index as f64 / self.config.devices as f64),
            None => self.start,
        };
        sleep_until(next.into()).await;
        loop {
            if Instant::now() >= self.deadline || !self.shared.take_ticket() {
                break;
            }
            let scheduled = match interval {
                Some(_) => {
                    if Instant::now().duration_since(next) > Duration::from_millis(2) {
                        self.shared.late.fetch_add(1, Ordering::Relaxed);
                    }
                    next
                }
                None => Instant::now(),
            };
            self.exchange(scheduled).await;
            if let Some(iv) = interval {
                next += iv;
                if next >= self.deadline {
                    break;
                }
                sleep_until(next.into()).await;
            }
        }
        self.shared.flush_latencies(&mut self.samples);
    }

    /// One request from first transmission to its end; records the outcome.
    async fn exchange(&mut self, scheduled: Instant) {
        self.mid = self.mid.wrapping_add(1);
        self.seq += 1;
        let mid = self.mid;
        // Token: device index and sequence, unique per device for 2^32 sends.
        let mut token = [0u8; 8];
        token[..4].copy_from_slice(&(self.index as u32).to_be_bytes());
        token[4..].copy_from_slice(&(self.seq as u32).to_be_bytes());
        let payload = match self.config.cbor {
            true => cbor_payload(self.seq, self.config.payload),
            false => payload(self.seq, self.config.payload),
        };
        let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        self.request.clear();
        Request {
            mtype: if self.config.confirmable {
                MsgType::Con
            } else {
                MsgType::Non
            },
            code: match self.config.method {
                Method::Post => coap::CODE_POST,
                Method::Put => coap::CODE_PUT,
            },
            mid,
            token: &token,
            path: &path,
            no_response: self.config.no_response.then_some(coap::NO_RESPONSE_ALL),
            content_format: self.config.cbor.then_some(60),
            payload: &payload,
        }
        .encode_into(&mut self.request);

        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        let first_sent = Instant::now();
        if !self.transmit().await {
            return;
        }
        if self.config.no_response {
            return;
        }
        let outcome = self.await_response(mid, &token).await;
        let now_us = unix_us();
        match outcome {
            Outcome::Answered { code, rst } => {
                let from_send = first_sent.elapsed().as_micros() as u64;
                let from_schedule = scheduled.elapsed().as_micros() as u64;
                self.samples.push((from_send, from_schedule));
                if self.samples.len() >= 256 {
                    self.shared.flush_latencies(&mut self.samples);
                }
                self.shared
                    .last_response_us
                    .fetch_max(now_us, Ordering::Relaxed);
                if rst {
                    self.shared.record_code("RST".into());
                } else {
                    if code >> 5 == 2 {
                        self.shared.ok.fetch_add(1, Ordering::Relaxed);
                        if Instant::now() <= self.deadline {
                            self.shared.ok_in_window.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    self.shared.record_code(coap::code_name(code));
                }
            }
            Outcome::TimedOut => {
                self.shared.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::NonLost => {
                self.shared.non_lost.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Abandoned => {
                self.shared.unanswered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn transmit(&mut self) -> bool {
        match self.link.send(&self.request).await {
            Ok(()) => true,
            Err(_) => {
                self.shared.io_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    async fn await_response(&mut self, mid: u16, token: &[u8]) -> Outcome {
        let t = self.config.transmission;
        let hard_stop = (self.deadline + self.config.grace).into();
        let mut wait = if self.config.confirmable {
            let jitter = rand::thread_rng().gen_range(1.0..=t.ack_random_factor.max(1.0));
            Duration::from_millis(t.ack_timeout_ms).mul_f64(jitter)
        } else {
            self.config.non_timeout
        };
        let mut timer = tokio::time::Instant::now() + wait;
        let mut retransmitted = 0u32;
        let mut separate = false;
        loop {
            let until = timer.min(hard_stop);
            let received = timeout_at(until, self.link.recv(&mut self.buf)).await;
            match received {
                Ok(Ok(len)) => {
                    let Some(h) = coap::parse_header(&self.buf[..len]) else {
                        continue;
                    };
                    match h.mtype {
                        MsgType::Ack | MsgType::Rst if h.mid == mid => {
                            if h.mtype == MsgType::Rst {
                                return Outcome::Answered { code: 0, rst: true };
                            }
                            if h.code == coap::CODE_EMPTY {
                                // Separate response to follow; stop resending.
                                separate = true;
                                timer = hard_stop;
                                continue;
                            }
                            if h.token == token {
                                return Outcome::Answered {
                                    code: h.code,
                                    rst: false,
                                };
                            }
                        }
                        MsgType::Con | MsgType::Non if h.token == token => {
                            let code = h.code;
                            if h.mtype == MsgType::Con {
                                let ack = coap::empty(MsgType::Ack, h.mid);
                                let _ = self.link.send(&ack).await;
                            }
                            return Outcome::Answered { code, rst: false };
                        }
                        // A request from the gateway: a pushed command.
                        MsgType::Con if (1..=7).contains(&h.code) => {
                            let ack = coap::ack(h.mid, h.token, coap::CODE_CHANGED);
                            let sent_us = coap::payload(&self.buf[..len])
                                .and_then(|p| std::str::from_utf8(p).ok())
                                .and_then(|t| t.trim().parse::<u64>().ok());
                            let _ = self.link.send(&ack).await;
                            self.shared.commands.fetch_add(1, Ordering::Relaxed);
                            if let Some(sent_us) = sent_us {
                                let latency = unix_us().saturating_sub(sent_us);
                                let mut guard = self
                                    .shared
                                    .command_latency
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner());
                                if let Some(h) = guard.as_mut() {
                                    h.saturating_record(latency.max(1));
                                }
                            }
                        }
                        // A late answer to an earlier exchange: ignore.
                        _ => {}
                    }
                }
                Ok(Err(_)) => {
                    // e.g. ICMP port unreachable while the server starts.
                    self.shared.io_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) => {
                    let now = tokio::time::Instant::now();
                    if now >= hard_stop {
                        return Outcome::Abandoned;
                    }
                    if !self.config.confirmable {
                        return Outcome::NonLost;
                    }
                    if separate || retransmitted >= t.max_retransmit {
                        return Outcome::TimedOut;
                    }
                    retransmitted += 1;
                    self.shared.retransmissions.fetch_add(1, Ordering::Relaxed);
                    self.transmit().await;
                    wait *= 2;
                    timer = now + wait;
                }
            }
        }
    }
}

/// A CBOR payload of about `size` bytes: `{"seq": N, "pad": "xx…"}`, the
/// sequence number first as a 64-bit unsigned integer (bytes 6..14), so
/// the subscriber reads it from the CBOR as sent and from its JSON
/// translation (`{"seq":N,"pad":"…"}`) alike.
pub fn cbor_payload(seq: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0xa2, 0x63, b's', b'e', b'q', 0x1b];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0x63, b'p', b'a', b'd']);
    let pad = size.saturating_sub(p.len() + 2).min(255);
    p.extend_from_slice(&[0x78, pad as u8]);
    p.extend(std::iter::repeat_n(b'x', pad));
    p
}

/// The payload: the device's sequence number (8 bytes, big-endian, which
/// the bench subscriber uses to check order and duplicates), padded to
/// `size` bytes.
pub fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut p = vec![b'x'; size.max(8)];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p.truncate(size.max(8));
    p
}
