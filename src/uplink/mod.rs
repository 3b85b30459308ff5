//! The uplink: one MQTT session at a time, publishing the queue in order.
//!
//! The queue is the only truth about what is undelivered. rumqttc silently
//! forgets its pending publishes when a session is not resumed, so every
//! connection gets a fresh client and event loop, and publishing starts again
//! from the oldest queued message. A message leaves the queue only on its
//! PUBACK (QoS 1) or once written to the socket (QoS 0).
//!
//! rumqttc's `publish` does not say which packet id a message got: it emits
//! `Outgoing::Publish(pkid)` for each publish, in request order. So the
//! session keeps the messages it handed to the client in a FIFO and pairs
//! each such event with the front of it.
//!
//! A message the broker keeps refusing (it closes the connection while that
//! message is the oldest in flight) is retried alone; after `max_attempts`
//! such connections it is dead-lettered so it never blocks the queue.
//! Timeouts and refused connections never count against a message: an
//! outage is not the message's fault.

pub mod backoff;
pub mod session;
pub mod tls;

use crate::message::{publish_packet_size, Qos};
use crate::store::{Command, Queue, Queued, Seq, StoreHandle};
use backoff::Backoff;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    StateError, TlsConfiguration, Transport,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How many queued messages one read brings into memory.
const READ_AHEAD: usize = 256;
/// How long a clean shutdown waits for the broker to take `offline`.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection that lived this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Everything the uplink needs, resolved from the config at start.
#[derive(Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
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
}

impl Settings {
    /// `mqtt://host:port` or `mqtts://host:port`, for logs.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

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
    pub last_error: Mutex<Option<String>>,
}

/// What the session handed to rumqttc, waiting for its packet id or ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Message { seq: Seq, qos: Qos },
    Status,
}

enum SessionEnd {
    Shutdown,
    Lost {
        connected_for: Option<Duration>,
        error: ConnectionError,
    },
}

pub struct Uplink<R> {
    settings: Settings,
    queue: Queue,
    store: StoreHandle<R>,
    stats: Arc<Stats>,
    /// Connections each message has seen the broker close while it was the
    /// oldest in flight.
    strikes: HashMap<Seq, u32>,
    /// The highest sequence number ever handed to a client: anything at or
    /// below it is published again.
    highest_published: Option<Seq>,
}

impl<R: Send + 'static> Uplink<R> {
    pub fn new(settings: Settings, queue: Queue, store: StoreHandle<R>) -> Uplink<R> {
        Uplink {
            settings,
            queue,
            store,
            stats: Arc::new(Stats::default()),
            strikes: HashMap::new(),
            highest_published: None,
        }
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs sessions until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.settings.reconnect_min, self.settings.reconnect_max);
        let url = self.settings.url();
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.session(&mut shutdown).await {
                SessionEnd::Shutdown => return,
                SessionEnd::Lost {
                    connected_for,
                    error,
                } => {
                    self.stats.connected.store(false, Ordering::Relaxed);
                    *self
                        .stats
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
                    match connected_for {
                        Some(lived) => {
                            log::warn!(mqtt_broker = url.as_str(); "uplink: lost {url} after {lived:.1?}: {error}");
                            if lived >= STABLE_SESSION {
                                backoff.reset();
                            }
                        }
                        None => {
                            self.stats
                                .connection_failures
                                .fetch_add(1, Ordering::Relaxed);
                            log::warn!(mqtt_broker = url.as_str(); "uplink: cannot connect to {url}: {}", explain(&error));
                        }
                    }
                }
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            log::debug!("uplink: reconnecting in {delay:.1?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn options(&self) -> MqttOptions {
        let s = &self.settings;
        let mut options = MqttOptions::new(&s.client_id, &s.host, s.port);
        options
            .set_keep_alive(s.keep_alive.max(Duration::from_secs(1)))
            .set_clean_session(true)
            .set_inflight(s.inflight.max(1))
            .set_request_channel_capacity(usize::from(s.inflight.max(1)) + 8)
            // Outgoing limit: ours, checked before publishing; incoming
            // packets are only acks.
            .set_max_packet_size(16 * 1024, s.max_packet_size.saturating_add(1024));
        if let Some(tls) = &s.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        if let Some((user, password)) = &s.credentials {
            options.set_credentials(user, password);
        }
        if let Some(topic) = &s.status_topic {
            options.set_last_will(LastWill::new(topic, "offline", QoS::AtLeastOnce, true));
        }
        options
    }

    async fn session(&mut self, shutdown: &mut watch::Receiver<bool>) -> SessionEnd {
        let (client, mut events) = AsyncClient::new(
            self.options(),
            usize::from(self.settings.inflight.max(1)) + 8,
        );
        let mut network = events.network_options();
        network.set_connection_timeout(self.settings.connect_timeout.as_secs().max(1));
        events.set_network_options(network);

        let connack = tokio::select! {
            r = events.poll() => r,
            _ = shutdown.changed() => return SessionEnd::Shutdown,
        };
        match connack {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {}
            Ok(other) => {
                log::warn!("uplink: expected CONNACK, got {other:?}");
                return SessionEnd::Lost {
                    connected_for: None,
                    error: ConnectionError::MqttState(StateError::ConnectionAborted),
                };
            }
            Err(error) => {
                return SessionEnd::Lost {
                    connected_for: None,
                    error,
                }
            }
        }
        let since = Instant::now();
        self.stats.connected.store(true, Ordering::Relaxed);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        log::info!(
            mqtt_broker = self.settings.url().as_str();
            "uplink: connected to {}; {} queued messages to send",
            self.settings.url(),
            self.queue.depth().0
        );
        self.dead_letter_repeat_offenders().await;

        // From here on the event loop is polled by a task of its own: a
        // poll must never be dropped half-way (see `EventPump`).
        let mut events = EventPump::start(events);
        let mut session = Session::default();
        if let Some(topic) = &self.settings.status_topic {
            if client
                .try_publish(topic, QoS::AtLeastOnce, true, "online")
                .is_ok()
            {
                session.unwritten.push_back(Slot::Status);
            }
        }
        // Messages the broker closed connections on go first, one at a time.
        session.probing = !self.strikes.is_empty();
        let mut closing_since: Option<Instant> = None;

        loop {
            if closing_since.is_none() {
                if let Err(e) = self.fill_window(&client, &mut session).await {
                    log::error!("uplink: cannot read the queue: {e}");
                }
            }
            let idle = session.exhausted && session.ahead.is_empty();
            let goodbye_deadline = closing_since.map(|t| t + GOODBYE_TIMEOUT);
            tokio::select! {
                biased;
                _ = shutdown.changed(), if closing_since.is_none() => {
                    closing_since = Some(Instant::now());
                    match &self.settings.status_topic {
                        Some(topic) if client.try_publish(topic, QoS::AtLeastOnce, true, "offline").is_ok() => {
                            session.unwritten.push_back(Slot::Status);
                            session.goodbye_pending = true;
                        }
                        _ => {
                            let _ = client.try_disconnect();
                        }
                    }
                }
                _ = sleep_until(goodbye_deadline) => {
                    log::warn!("uplink: broker did not confirm 'offline' in time; closing anyway");
                    return SessionEnd::Shutdown;
                }
                event = events.next() => match event {
                    Ok(event) => {
                        let done = self.on_event(event, &mut session).await;
                        if done && closing_since.is_some() {
                            let _ = client.try_disconnect();
                            // Let the event loop write the DISCONNECT.
                            let _ = tokio::time::timeout(Duration::from_millis(500), events.until_disconnect_written()).await;
                            return SessionEnd::Shutdown;
                        }
                    }
                    Err(error) => {
                        if closing_since.is_some() {
                            return SessionEnd::Shutdown;
                        }
                        self.blame(&session, &error);
                        return SessionEnd::Lost { connected_for: Some(since.elapsed()), error };
                    }
                },
                _ = self.queue.wait_for_new(), if idle && closing_since.is_none() => {
                    session.exhausted = false;
                }
            }
        }
    }

    /// Hands queued messages to the client while the in-flight window has
    /// room. Reads from the store run on tokio's blocking pool: file reads
    /// must not hold up the runtime's workers.
    async fn fill_window(
        &mut self,
        client: &AsyncClient,
        session: &mut Session,
    ) -> Result<(), crate::store::StoreError> {
        let window = if session.probing {
            1
        } else {
            usize::from(self.settings.inflight.max(1))
        };
        while session.in_flight() < window {
            if session.ahead.is_empty() {
                if session.exhausted {
                    return Ok(());
                }
                let queue = self.queue.clone();
                let mut reader = session.reader.take().unwrap_or_else(|| queue.reader());
                let (reader, batch) = tokio::task::spawn_blocking(move || {
                    let batch = queue.read(&mut reader, READ_AHEAD);
                    (reader, batch)
                })
                .await
                .map_err(|e| crate::store::StoreError::Io {
                    path: self.queue.path().to_path_buf(),
                    source: std::io::Error::other(e),
                })?;
                session.reader = Some(reader);
                let batch = batch?;
                if batch.is_empty() {
                    session.exhausted = true;
                    return Ok(());
                }
                for item in batch {
                    match item {
                        Ok(queued) => session.ahead.push_back(queued),
                        Err(lost) => {
                            let store = self.store.clone();
                            tokio::spawn(async move {
                                let _ = store
                                    .send(Command::Lost {
                                        first: lost.first,
                                        end: lost.end,
                                        reason: lost.reason,
                                    })
                                    .await;
                            });
                        }
                    }
                }
                continue;
            }
            let Some(next) = session.ahead.pop_front() else {
                continue;
            };
            let message = &next.message;
            let size = publish_packet_size(&message.topic, message.payload.len());
            if size > self.settings.max_packet_size {
                self.dead_letter_now(
                    next.seq,
                    format!(
                        "MQTT packet of {size} bytes exceeds mqtt.max_packet_size ({})",
                        self.settings.max_packet_size
                    ),
                );
                continue;
            }
            let qos = match message.qos {
                Qos::AtMostOnce => QoS::AtMostOnce,
                Qos::AtLeastOnce => QoS::AtLeastOnce,
            };
            let Queued { seq, message, .. } = next;
            let topic = message.topic;
            match client.try_publish(topic.clone(), qos, message.retain, message.payload) {
                Ok(()) => {
                    if self.highest_published.is_some_and(|h| seq <= h) {
                        self.stats.resent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.highest_published = Some(seq);
                    }
                    session.unwritten.push_back(Slot::Message {
                        seq,
                        qos: message.qos,
                    })
                }
                Err(e) => {
                    // The request channel is sized above the window, so this
                    // means the event loop is gone; the session is ending.
                    log::debug!("uplink: publish not queued: {e}");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Handles one event; true when a pending goodbye is confirmed.
    async fn on_event(&mut self, event: Event, session: &mut Session) -> bool {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let Some(slot) = session.unwritten.pop_front() else {
                    log::error!("uplink: rumqttc sent a publish we did not ask for (pkid {pkid})");
                    return false;
                };
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                match slot {
                    Slot::Message {
                        seq,
                        qos: Qos::AtMostOnce,
                    } => self.remove(seq).await,
                    _ => {
                        session.unacked.insert(pkid, slot);
                    }
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => match session.unacked.remove(&ack.pkid) {
                Some(Slot::Message { seq, .. }) => {
                    self.stats.acked.fetch_add(1, Ordering::Relaxed);
                    // Messages go in queue order, so every suspect up to this
                    // one has now been acked or has left the queue otherwise.
                    self.strikes.retain(|suspect, _| *suspect > seq);
                    session.probing = !self.strikes.is_empty();
                    self.remove(seq).await;
                }
                Some(Slot::Status) => {
                    if session.goodbye_pending {
                        return true;
                    }
                }
                None => log::debug!("uplink: PUBACK for unknown pkid {}", ack.pkid),
            },
            _ => {}
        }
        false
    }

    async fn remove(&self, seq: Seq) {
        // If the committer is gone the daemon is stopping; the message stays
        // queued and is sent again next time.
        let _ = self.store.send(Command::Remove(seq)).await;
    }

    fn dead_letter_now(&self, seq: Seq, reason: String) {
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        log::error!(queue_seq = seq; "uplink: message {seq} goes to dead letters: {reason}");
        let store = self.store.clone();
        tokio::spawn(async move {
            let _ = store.send(Command::DeadLetter { seq, reason }).await;
        });
    }

    async fn dead_letter_repeat_offenders(&mut self) {
        let limit = self.settings.max_attempts.max(1);
        let doomed: Vec<Seq> = self
            .strikes
            .iter()
            .filter(|(_, n)| **n >= limit)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in doomed {
            self.strikes.remove(&seq);
            self.dead_letter_now(
                seq,
                format!("the broker closed the connection {limit} times while this message was in flight"),
            );
        }
    }

    /// Charges a strike to the oldest message in flight when the broker
    /// itself closed the connection (not a timeout or a refusal).
    fn blame(&mut self, session: &Session, error: &ConnectionError) {
        if !closed_by_broker(error) {
            return;
        }
        let oldest = session
            .unwritten
            .iter()
            .chain(session.unacked.values())
            .filter_map(|slot| match slot {
                Slot::Message { seq, .. } => Some(*seq),
                Slot::Status => None,
            })
            .min();
        if let Some(seq) = oldest {
            let n = self.strikes.entry(seq).or_insert(0);
            *n += 1;
            log::warn!(
                queue_seq = seq;
                "uplink: broker closed the connection with message {seq} in flight ({n} times)"
            );
        }
    }
}

/// The state of one connection; dropped with it.
#[derive(Default)]
struct Session {
    /// Read from the queue, not yet handed to the client.
    ahead: VecDeque<Queued>,
    /// Where this connection reads the queue (from the oldest message on,
    /// at its first read).
    reader: Option<crate::store::Reader>,
    /// The last read found nothing newer.
    exhausted: bool,
    /// Handed to the client; waiting for their `Outgoing::Publish` event.
    unwritten: VecDeque<Slot>,
    /// Written with a packet id; waiting for PUBACK.
    unacked: HashMap<u16, Slot>,
    /// Send one message at a time until the suspects are through.
    probing: bool,
    goodbye_pending: bool,
}

impl Session {
    fn in_flight(&self) -> usize {
        self.unwritten.len() + self.unacked.len()
    }
}

fn closed_by_broker(error: &ConnectionError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    if matches!(
        error,
        ConnectionError::MqttState(StateError::ConnectionAborted)
    ) {
        return true;
    }
    io_error(error).is_some_and(|e| {
        matches!(
            e.kind(),
            ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
        )
    })
}

/// The I/O error under a connection error, however rumqttc wrapped it: a
/// read error surfaces through its codec as a decoding error around it.
fn io_error(error: &ConnectionError) -> Option<&std::io::Error> {
    match error {
        ConnectionError::Io(e)
        | ConnectionError::MqttState(StateError::Io(e))
        | ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(
            e,
        ))) => Some(e),
        _ => None,
    }
}

/// A connect error in words an operator can act on.
fn explain(error: &ConnectionError) -> String {
    use rustls::AlertDescription as Alert;
    match tls_alert(error) {
        Some(Alert::CertificateRequired) => {
            return "the broker requires a client certificate: set mqtt.client_cert and mqtt.client_key".into();
        }
        Some(
            alert @ (Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::AccessDenied),
        ) => {
            return format!("the broker refused our client certificate ({alert:?}): check that mqtt.client_cert is signed by a CA the broker trusts");
        }
        _ => {}
    }
    match error {
        ConnectionError::Tls(e) => format!("TLS handshake failed: {e} (check mqtt.ca_file, client_cert, client_key and the broker's host name)"),
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection: {code:?} (check client_id, username and password_file)"),
        ConnectionError::NetworkTimeout => "no CONNACK within the connect timeout (broker unreachable or not answering)".into(),
        other => other.to_string(),
    }
}

/// The TLS alert the broker sent, if that is what ended the connection
/// (rustls reports it inside an I/O error).
fn tls_alert(error: &ConnectionError) -> Option<rustls::AlertDescription> {
    match io_error(error)?
        .get_ref()?
        .downcast_ref::<rustls::Error>()?
    {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Polls a connected event loop in a task of its own and hands its events
/// over a channel.
///
/// Why: rumqttc 0.25 takes a request from its channel, records it (and
/// queues its `Outgoing::Publish` event), then awaits the socket write and
/// flush inside one `poll()`. A session that raced `poll()` against other
/// futures in a `select!` dropped that poll whenever the queue woke it up:
/// a publish could then be recorded as sent but never written (its
/// in-flight slot never freed, its PUBACK never coming, the message stuck
/// until the next reconnect), or left unflushed until the next keep-alive.
/// Here a poll always runs to completion; the session waits on the channel,
/// which is safe to drop at any point.
struct EventPump {
    events: tokio::sync::mpsc::Receiver<Result<Event, ConnectionError>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventPump {
    /// Events buffered between the pump and the session.
    const CAPACITY: usize = 64;

    fn start(mut event_loop: EventLoop) -> EventPump {
        let (tx, events) = tokio::sync::mpsc::channel(Self::CAPACITY);
        let task = tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await;
                let failed = event.is_err();
                if tx.send(event).await.is_err() || failed {
                    return;
                }
            }
        });
        EventPump { events, task }
    }

    /// The next event; an error ends the connection.
    async fn next(&mut self) -> Result<Event, ConnectionError> {
        match self.events.recv().await {
            Some(event) => event,
            // The pump only stops after sending its error, so this is a
            // pump that panicked.
            None => Err(ConnectionError::MqttState(StateError::ConnectionAborted)),
        }
    }

    /// Waits until rumqttc reports the DISCONNECT as written, or the end.
    async fn until_disconnect_written(&mut self) {
        while let Some(Ok(event)) = self.events.recv().await {
            if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                return;
            }
        }
    }
}

impl Drop for EventPump {
    /// The connection ends with the session: dropping the event loop (in
    /// the aborted task) closes the socket.
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_client_certificate_is_explained_with_the_keys_to_set() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        let error = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::Io(io),
        ));
        assert!(explain(&error).contains("set mqtt.client_cert and mqtt.client_key"));
    }

    #[test]
    fn only_a_broker_side_close_blames_a_message() {
        let eof = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(closed_by_broker(&ConnectionError::Io(eof)));
        assert!(closed_by_broker(&ConnectionError::MqttState(
            StateError::ConnectionAborted
        )));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(closed_by_broker(&ConnectionError::MqttState(
            StateError::Deserialization(rumqttc::mqttbytes::Error::Io(reset))
        )));
        assert!(!closed_by_broker(&ConnectionError::NetworkTimeout));
        assert!(!closed_by_broker(&ConnectionError::MqttState(
            StateError::AwaitPingResp
        )));
    }
}
