//! The uplink: one MQTT session at a time, publishing the queue in order,
//! to the first broker of the list that answers.
//!
//! The queue is the only truth about what is undelivered. rumqttc silently
//! forgets its pending publishes when a session is not resumed, so every
//! connection gets a fresh client, and publishing starts again from the
//! oldest queued message. What the events mean for the queue is decided in
//! `session.rs` (sans-IO, tested alone); `client.rs` speaks MQTT 3.1.1 or 5
//! through rumqttc; this file connects, fails over, and carries out the
//! decisions.
//!
//! Brokers: `mqtt.url` may list several (a cluster's nodes, a primary and a
//! standby). A round tries them in turn from the last one that worked; the
//! first that answers gets the session; a lost session starts a new round,
//! after the reconnect backoff, from the same broker. Protocol: with
//! `auto`, MQTT 5 first and, for a broker whose answer shows it does not
//! speak 5, 3.1.1 from then on (said once in the log).

pub mod backoff;
pub mod client;
pub mod properties;
pub mod session;
pub mod tls;

use crate::config::{Endpoint, Protocol};
use crate::message::Qos;
use crate::store::{Command, Queue, Queued, Reader, Seq, StoreHandle};
use backoff::Backoff;
use client::{Connection, Lost, Observed, Outbound, Version};
use session::{Admission, Core, Decision, Session, Slot};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How many queued messages one read brings into memory.
const READ_AHEAD: usize = 256;
/// How long a clean shutdown waits for the broker to take `offline`.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection that lived this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// An HTTP CONNECT proxy, credentials read.
#[derive(Clone)]
pub struct ProxySettings {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

/// Everything the uplink needs, resolved from the config at start.
#[derive(Clone)]
pub struct Settings {
    /// The brokers, in the order to try them; never empty.
    pub brokers: Vec<Endpoint>,
    pub protocol: Protocol,
    /// For every TLS broker (mqtts, wss).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub proxy: Option<ProxySettings>,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    pub inflight: u16,
    pub status_topic: Option<String>,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub connect_timeout: Duration,
    pub max_packet_size: usize,
    pub max_attempts: u32,
    /// `gateway.id`, sent with every MQTT 5 publish.
    pub gateway: String,
    /// The command tables' filters, subscribed to with QoS 1 in a
    /// persistent session; empty: no subscription, a clean session.
    pub subscriptions: Vec<String>,
}

impl Settings {
    /// The brokers' URLs, for logs.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.brokers.iter().map(Endpoint::url).collect();
        urls.join(", ")
    }
}

/// The MQTT 5 PUBACK reason codes counted apart (the rest as "other").
pub const NACK_REASONS: [u8; 8] = [0x80, 0x83, 0x87, 0x90, 0x91, 0x95, 0x97, 0x99];

/// Figures for metrics and status.
#[derive(Debug, Default)]
pub struct Stats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub connection_failures: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    /// Messages published again in a later session (at-least-once retries).
    pub resent: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Messages that waited longer than their route's `expiry_s`.
    pub expired: AtomicU64,
    /// PUBACKs with a failing reason, by [`NACK_REASONS`] (last: other).
    pub nacks: [AtomicU64; NACK_REASONS.len() + 1],
    /// Sessions on a broker other than the previous session's.
    pub failovers: AtomicU64,
    /// 0 not connected, 4 MQTT 3.1.1, 5 MQTT 5.
    pub version: AtomicU8,
    /// The broker of the current (or last) session.
    pub broker: Mutex<String>,
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    fn count_nack(&self, reason: u8) {
        let i = NACK_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(NACK_REASONS.len());
        self.nacks[i].fetch_add(1, Ordering::Relaxed);
    }

    fn set_error(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
    }
}

enum SessionEnd {
    Shutdown,
    Lost { lived: Duration, why: String },
}

enum Attempt {
    Up(Connection, session::Limits),
    Failed(Lost),
    Shutdown,
}

/// The uplink's side of the command intake: PUBLISHes from the broker go
/// out on `intake`; their PUBACKs come back on `acks` once the commands are
/// journaled. Each carries the session it belongs to: an ack for a session
/// that has ended is not sent (the broker sends the command again in the
/// next one, and the intake recognises the repeat).
pub struct CommandLink {
    pub intake: mpsc::UnboundedSender<FromBroker>,
    pub acks: mpsc::UnboundedReceiver<AckFor>,
}

/// A PUBLISH from the broker in session `session`.
#[derive(Debug)]
pub struct FromBroker {
    pub session: u64,
    pub publish: client::Inbound,
}

/// Send the PUBACK of packet `pkid` of session `session`.
#[derive(Debug, Clone, Copy)]
pub struct AckFor {
    pub session: u64,
    pub pkid: u16,
}

pub struct Uplink<R> {
    commands: Option<CommandLink>,
    settings: Settings,
    queue: Queue,
    store: StoreHandle<R>,
    stats: Arc<Stats>,
    core: Core,
    /// Per broker, under `auto`: the version it was found to speak.
    learned: Vec<Option<Version>>,
}

impl<R: Send + 'static> Uplink<R> {
    pub fn new(settings: Settings, queue: Queue, store: StoreHandle<R>) -> Uplink<R> {
        let brokers = settings.brokers.len();
        let core = Core::new(settings.max_attempts);
        Uplink {
            commands: None,
            settings,
            queue,
            store,
            stats: Arc::new(Stats::default()),
            core,
            learned: vec![None; brokers],
        }
    }

    /// Hands incoming PUBLISHes (commands) to `link` and acks them when
    /// told; without it the uplink subscribes to nothing.
    pub fn with_commands(mut self, link: CommandLink) -> Uplink<R> {
        self.commands = Some(link);
        self
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs sessions until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.settings.reconnect_min, self.settings.reconnect_max);
        let brokers = self.settings.brokers.len().max(1);
        let mut last_good = 0usize;
        let mut last_session: Option<usize> = None;
        loop {
            for i in 0..brokers {
                if *shutdown.borrow() {
                    return;
                }
                let index = (last_good + i) % brokers;
                let url = self.settings.brokers[index].url();
                match self.connect(index, &mut shutdown).await {
                    Attempt::Shutdown => return,
                    Attempt::Failed(lost) => {
                        self.stats
                            .connection_failures
                            .fetch_add(1, Ordering::Relaxed);
                        self.stats.set_error(&lost.why);
                        log::warn!(mqtt_broker = url.as_str(); "uplink: cannot connect to {url}: {}", lost.why);
                    }
                    Attempt::Up(connection, limits) => {
                        if last_session.is_some_and(|previous| previous != index) {
                            self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                            log::warn!(mqtt_broker = url.as_str(); "uplink: failed over to {url}");
                        }
                        last_good = index;
                        last_session = Some(index);
                        match self.session(connection, limits, &url, &mut shutdown).await {
                            SessionEnd::Shutdown => return,
                            SessionEnd::Lost { lived, why } => {
                                self.stats.connected.store(false, Ordering::Relaxed);
                                self.stats.version.store(0, Ordering::Relaxed);
                                self.stats.set_error(&why);
                                log::warn!(mqtt_broker = url.as_str(); "uplink: lost {url} after {lived:.1?}: {why}");
                                if lived >= STABLE_SESSION {
                                    backoff.reset();
                                }
                            }
                        }
                        break;
                    }
                }
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            log::debug!("uplink: trying again in {delay:.1?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Connects to broker `index`, in the version the config asks for or,
    /// under `auto`, the one it was found to speak (5 until shown otherwise).
    async fn connect(&mut self, index: usize, shutdown: &mut watch::Receiver<bool>) -> Attempt {
        let endpoint = self.settings.brokers[index].clone();
        let version = match self.settings.protocol {
            Protocol::V5 => Version::V5,
            Protocol::V311 => Version::V311,
            Protocol::Auto => self.learned[index].unwrap_or(Version::V5),
        };
        if endpoint.tls() && self.settings.tls.is_none() {
            return Attempt::Failed(Lost {
                why: "no TLS configuration for a TLS broker".into(),
                by_broker: false,
                maybe_not_v5: false,
            });
        }
        let first = tokio::select! {
            r = Connection::open(&self.settings, &endpoint, version) => r,
            _ = shutdown.changed() => return Attempt::Shutdown,
        };
        match first {
            Ok((connection, limits)) => {
                if self.settings.protocol == Protocol::Auto {
                    self.learned[index] = Some(version);
                }
                Attempt::Up(connection, limits)
            }
            Err(lost)
                if self.settings.protocol == Protocol::Auto
                    && version == Version::V5
                    && lost.maybe_not_v5
                    && self.learned[index].is_none() =>
            {
                let second = tokio::select! {
                    r = Connection::open(&self.settings, &endpoint, Version::V311) => r,
                    _ = shutdown.changed() => return Attempt::Shutdown,
                };
                match second {
                    Ok((connection, limits)) => {
                        self.learned[index] = Some(Version::V311);
                        log::warn!(
                            mqtt_broker = endpoint.url().as_str();
                            "uplink: {} does not speak MQTT 5 ({}); using MQTT 3.1.1 with it",
                            endpoint.url(),
                            lost.why
                        );
                        Attempt::Up(connection, limits)
                    }
                    // The 3.1.1 attempt's error is the one that tells
                    // why this broker is unusable now.
                    Err(again) => Attempt::Failed(Lost {
                        why: format!("{} (in MQTT 3.1.1; in MQTT 5: {})", again.why, lost.why),
                        ..again
                    }),
                }
            }
            Err(lost) => Attempt::Failed(lost),
        }
    }

    async fn session(
        &mut self,
        mut connection: Connection,
        limits: session::Limits,
        url: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let since = Instant::now();
        let (mut session, doomed) = self.core.begin(
            limits,
            self.settings.inflight,
            self.settings.max_packet_size,
        );
        for decision in doomed {
            self.carry_out(decision).await;
        }
        self.stats.connected.store(true, Ordering::Relaxed);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        self.stats.version.store(
            match connection.version {
                Version::V311 => 4,
                Version::V5 => 5,
            },
            Ordering::Relaxed,
        );
        *self.stats.broker.lock().unwrap_or_else(|p| p.into_inner()) = url.to_string();
        let window = match session.window_by_broker() {
            true => format!(
                "{} in flight, the broker's Receive Maximum",
                session.full_window()
            ),
            false => format!("{} in flight", session.full_window()),
        };
        log::info!(
            mqtt_broker = url;
            "uplink: connected to {url} ({}, {window}); {} queued messages to send",
            connection.version.name(),
            self.queue.depth().0
        );
        if let Some(topic) = &self.settings.status_topic {
            if connection.publish(status(topic, "online")) {
                self.core.handed(&mut session, Slot::Status);
            }
        }
        let mut feed = Feed::default();
        let mut closing_since: Option<Instant> = None;
        let session_id = self.stats.connects.load(Ordering::Relaxed);
        loop {
            if closing_since.is_none() {
                if let Err(e) = self.fill_window(&connection, &mut session, &mut feed).await {
                    log::error!("uplink: cannot read the queue: {e}");
                }
            }
            let idle = feed.exhausted && feed.ahead.is_empty();
            let goodbye_deadline = closing_since.map(|t| t + GOODBYE_TIMEOUT);
            tokio::select! {
                biased;
                _ = shutdown.changed(), if closing_since.is_none() => {
                    closing_since = Some(Instant::now());
                    match &self.settings.status_topic {
                        Some(topic) if connection.publish(status(topic, "offline")) => {
                            self.core.handed(&mut session, Slot::Status);
                            session.goodbye_pending = true;
                        }
                        _ => connection.disconnect(),
                    }
                }
                _ = sleep_until(goodbye_deadline) => {
                    log::warn!("uplink: broker did not confirm 'offline' in time; closing anyway");
                    return SessionEnd::Shutdown;
                }
                event = connection.events.next() => match event {
                    Ok(Observed::Written(pkid)) => {
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                        let decision = self.core.written(&mut session, pkid);
                        self.carry_out(decision).await;
                    }
                    Ok(Observed::Acked { pkid, reason }) => {
                        if reason >= 0x80 {
                            self.stats.count_nack(reason);
                        }
                        match self.core.acked(&mut session, pkid, reason) {
                            Decision::GoodbyeDone => {
                                connection.disconnect();
                                // Let the event loop write the DISCONNECT.
                                let _ = tokio::time::timeout(
                                    Duration::from_millis(500),
                                    connection.events.until_disconnect_written(),
                                )
                                .await;
                                return SessionEnd::Shutdown;
                            }
                            Decision::Reconnect(why) if closing_since.is_none() => {
                                return SessionEnd::Lost { lived: since.elapsed(), why };
                            }
                            decision => {
                                if matches!(decision, Decision::Remove(_)) {
                                    self.stats.acked.fetch_add(1, Ordering::Relaxed);
                                }
                                self.carry_out(decision).await;
                            }
                        }
                    }
                    Ok(Observed::Subscribed { granted: true }) => {
                        log::info!(mqtt_broker = url; "uplink: subscribed to the command topics {}", self.settings.subscriptions.join(", "));
                    }
                    Ok(Observed::Subscribed { granted: false }) => {
                        log::error!(
                            mqtt_broker = url;
                            "uplink: the broker refused a subscription to the command topics {} (its ACL?); commands cannot arrive",
                            self.settings.subscriptions.join(", ")
                        );
                    }
                    Ok(Observed::Incoming(publish)) => {
                        match &self.commands {
                            Some(link) => {
                                let _ = link.intake.send(FromBroker { session: session_id, publish });
                            }
                            None => log::debug!("uplink: ignored a PUBLISH on {} (no command tables)", publish.topic),
                        }
                    }
                    Ok(_) => {}
                    Err(lost) => {
                        if closing_since.is_some() {
                            return SessionEnd::Shutdown;
                        }
                        if let Some((seq, n)) = self.core.closed(&session, lost.by_broker) {
                            log::warn!(
                                queue_seq = seq;
                                "uplink: broker closed the connection with message {seq} in flight ({n} times)"
                            );
                        }
                        return SessionEnd::Lost { lived: since.elapsed(), why: lost.why };
                    }
                },
                _ = self.queue.wait_for_new(), if idle && closing_since.is_none() => {
                    feed.exhausted = false;
                }
                Some(ack) = next_ack(&mut self.commands) => {
                    if ack.session == session_id && !connection.ack(ack.pkid) {
                        log::debug!("uplink: the PUBACK of command packet {} could not be queued", ack.pkid);
                    }
                }
            }
        }
    }

    /// Hands queued messages to the client while the window has room.
    /// Reads from the store run on tokio's blocking pool: file reads must
    /// not hold up the runtime's workers.
    async fn fill_window(
        &mut self,
        connection: &Connection,
        session: &mut Session,
        feed: &mut Feed,
    ) -> Result<(), crate::store::StoreError> {
        while session.room() > 0 {
            let Some(next) = feed.next(&self.queue, &self.store).await? else {
                return Ok(());
            };
            let Queued {
                seq,
                message,
                received_ms,
            } = next;
            let size = match connection.version {
                Version::V311 => properties::packet_size_v311(&message),
                Version::V5 => properties::packet_size_v5(&message, &self.settings.gateway),
            };
            let age_ms = crate::clock::now_ms().saturating_sub(received_ms);
            match self
                .core
                .admit(session, size, age_ms, message.meta.expiry_s)
            {
                Admission::DeadLetter(reason) => {
                    self.carry_out(Decision::DeadLetter(seq, reason)).await;
                    continue;
                }
                Admission::Expired => {
                    self.stats.expired.fetch_add(1, Ordering::Relaxed);
                    log::debug!(queue_seq = seq; "uplink: message {seq} expired in the queue (route expiry_s)");
                    self.carry_out(Decision::Remove(seq)).await;
                    continue;
                }
                Admission::Publish => {}
            }
            let qos = message.qos;
            let properties = match connection.version {
                Version::V311 => None,
                Version::V5 => Some(v5_properties(
                    &self.settings.gateway,
                    &message,
                    seq,
                    received_ms,
                    age_ms,
                )),
            };
            let sent = connection.publish(Outbound {
                topic: message.topic,
                payload: message.payload,
                qos1: qos == Qos::AtLeastOnce,
                retain: message.retain,
                properties,
            });
            if !sent {
                // The request channel is sized above the window, so this
                // means the event loop is gone; the session is ending.
                log::debug!("uplink: publish not queued: the connection is ending");
                return Ok(());
            }
            if self.core.handed(session, Slot::Message { seq, qos }) {
                self.stats.resent.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn carry_out(&self, decision: Decision) {
        match decision {
            // If the committer is gone the daemon is stopping; the message
            // stays queued and is sent again next time.
            Decision::Remove(seq) => {
                if self.queue.retire(seq) {
                    let _ = self.store.send(Command::Retired).await;
                }
            }
            Decision::DeadLetter(seq, reason) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                log::error!(queue_seq = seq; "uplink: message {seq} goes to dead letters: {reason}");
                let _ = self.store.send(Command::DeadLetter { seq, reason }).await;
            }
            Decision::Keep | Decision::Reconnect(_) | Decision::GoodbyeDone => {}
        }
    }
}

/// Where a session reads the queue: a store reader from the oldest message
/// on, and what it read ahead.
#[derive(Default)]
struct Feed {
    ahead: VecDeque<Queued>,
    reader: Option<Reader>,
    /// The last read found nothing newer.
    exhausted: bool,
}

impl Feed {
    async fn next<R: Send + 'static>(
        &mut self,
        queue: &Queue,
        store: &StoreHandle<R>,
    ) -> Result<Option<Queued>, crate::store::StoreError> {
        loop {
            if let Some(next) = self.ahead.pop_front() {
                return Ok(Some(next));
            }
            if self.exhausted {
                return Ok(None);
            }
            let queue_for_read = queue.clone();
            let mut reader = self.reader.take().unwrap_or_else(|| queue.reader());
            let (reader, batch) = tokio::task::spawn_blocking(move || {
                let batch = queue_for_read.read(&mut reader, READ_AHEAD);
                (reader, batch)
            })
            .await
            .map_err(|e| crate::store::StoreError::Io {
                path: queue.path().to_path_buf(),
                source: std::io::Error::other(e),
            })?;
            self.reader = Some(reader);
            let batch = batch?;
            if batch.is_empty() {
                self.exhausted = true;
                return Ok(None);
            }
            for item in batch {
                match item {
                    Ok(queued) => self.ahead.push_back(queued),
                    Err(lost) => {
                        let _ = store
                            .send(Command::Lost {
                                first: lost.first,
                                end: lost.end,
                                reason: lost.reason,
                            })
                            .await;
                    }
                }
            }
        }
    }
}

/// The retained status message.
fn status(topic: &str, text: &str) -> Outbound {
    Outbound {
        topic: topic.to_string(),
        payload: text.as_bytes().to_vec(),
        qos1: true,
        retain: true,
        properties: None,
    }
}

fn v5_properties(
    gateway: &str,
    message: &crate::message::Message,
    seq: Seq,
    received_ms: u64,
    age_ms: u64,
) -> rumqttc::v5::mqttbytes::v5::PublishProperties {
    let meta = &message.meta;
    rumqttc::v5::mqttbytes::v5::PublishProperties {
        payload_format_indicator: std::str::from_utf8(&message.payload).is_ok().then_some(1),
        message_expiry_interval: properties::remaining_expiry(meta.expiry_s, age_ms),
        content_type: Some(properties::message_content_type(meta).to_string()),
        user_properties: properties::user_properties(gateway, meta, seq, received_ms),
        correlation_data: meta.correlation.clone().map(Into::into),
        ..Default::default()
    }
}

/// The next ack to send, or never without command tables.
async fn next_ack(link: &mut Option<CommandLink>) -> Option<AckFor> {
    match link {
        Some(link) => link.acks.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
