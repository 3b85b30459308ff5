//! One listener's CoAP server: datagrams from a [`Link`] through the
//! sans-IO [`Exchange`] to the store, and answers back after the commit.
//!
//! The task is a thin shell around the exchange: datagrams in, decisions
//! out. A message to keep goes to the store's committer with a ticket; the
//! device is answered only when the committer hands the ticket back with the
//! outcome of the flush. One task owns the exchange, so its tables need no
//! locks. The same loop serves plain UDP and DTLS; over DTLS the peer
//! carries the device's identity, which routes and deduplication use.
//!
//! Backpressure: when the committer's channel is full this task waits and
//! stops reading its link; the kernel's receive buffer (then the devices'
//! retransmissions) absorb the burst. Nothing is answered that is not stored.
//!
//! The committer hands back the outcomes of a commit together; the task
//! answers all that are back before it sends, and the link sends them as
//! one batch (plain UDP: one `sendmmsg`), so a commit of 50 devices costs
//! one system call to answer, not 50.

use super::{Link, Receipt};
use crate::clock::now_ms;
use crate::coap::client::{Client, Outcome as PushOutcome, Received, Request as PushRequest};
use crate::coap::exchange::{Exchange, MailboxTicket, Peer, Step, StoreOutcome, Ticket};
use crate::coap::mailbox::{Carried, MailboxAnswer, MailboxRequest};
use crate::coap::wire::Token;
use crate::command::service::{Asker, Poll, Report, Service};
use crate::devices::SharedDevices;
use crate::logging::RateLimited;
use crate::metrics::{TransportMetrics, PUBLISH_EVERY};
use crate::route::Router;
use crate::store::{AppendOutcome, Command, StoreHandle};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Largest UDP payload; a larger read would be truncated.
pub const MAX_DATAGRAM: usize = 65_535;

/// Most answers gathered from the store's outcomes before they are sent:
/// a commit's answers leave together, but the first device of a very large
/// commit does not wait for the last one's answer to be built.
const ANSWER_BATCH: usize = 256;

pub struct Server<L> {
    pub link: L,
    pub exchange: Exchange,
    pub routes: watch::Receiver<Arc<Router>>,
    pub store: StoreHandle<Receipt>,
    /// This listener's counters, published for /metrics at most every
    /// [`PUBLISH_EVERY`]: no lock per datagram.
    pub metrics: TransportMetrics,
    /// Where what devices did is recorded (shared by all listeners).
    pub devices: SharedDevices,
    /// The command mailboxes, when there are command tables.
    pub commands: Option<Arc<Service>>,
}

impl<L: Link> Server<L> {
    /// Serves until `shutdown`; then stops reading, answers every message
    /// already handed to the store, and returns.
    pub async fn serve(mut self, mut shutdown: watch::Receiver<bool>) {
        let (committed_tx, mut committed) = mpsc::unbounded_channel::<(Receipt, AppendOutcome)>();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (reported_tx, mut reported) =
            mpsc::unbounded_channel::<(MailboxTicket, MailboxAnswer)>();
        let mut awaiting_store = 0usize;
        // Requests the gateway sends devices (push commands), and the
        // devices whose push was settled, to send them their next while
        // their window is open.
        let mut pushes = Client::new();
        let mut windows: HashMap<Peer, (String, Instant)> = HashMap::new();
        let (settled_tx, mut settled) = mpsc::unbounded_channel::<Peer>();
        let mut stopping = false;
        let mut quiet = RateLimited::new(Duration::from_secs(10));
        let mut answers: Vec<(Vec<u8>, Peer)> = Vec::new();
        let mut awake: Vec<(String, Peer)> = Vec::new();
        let mut publish = tokio::time::interval(PUBLISH_EVERY);
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            self.metrics
                .maybe_publish(self.exchange.counters(), Instant::now());
            if stopping && awaiting_store == 0 {
                self.metrics.publish(self.exchange.counters());
                log::debug!("coap {}: stopped", self.link.name());
                return;
            }
            let due = match (self.link.poll_timeout(), pushes.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(due) = due {
                timer.as_mut().reset(due.into());
            }
            tokio::select! {
                biased;
                Some(first) = committed.recv() => {
                    // Every outcome already back is answered together: the
                    // answers of a commit leave in one batch.
                    let mut next = Some(first);
                    while let Some((receipt, outcome)) = next.take() {
                        awaiting_store -= 1;
                        if let Receipt::Request(ticket) = receipt {
                            self.answer_stored(ticket, store_outcome(outcome), &mut answers, &mut awake);
                        }
                        if answers.len() < ANSWER_BATCH {
                            next = committed.try_recv().ok();
                        }
                    }
                    self.record_sightings();
                    self.send_all(&mut answers, &mut quiet).await;
                    // The devices listen now: send each its next push command.
                    for (device, peer) in awake.drain(..) {
                        if let Some(until) = self.push(&mut pushes, &device, &peer, &mut quiet).await {
                            windows.retain(|_, (_, end)| *end > Instant::now());
                            windows.insert(peer, (device, until));
                        }
                    }
                }
                Some((ticket, answer)) = reported.recv() => {
                    awaiting_store -= 1;
                    let peer = ticket.peer().clone();
                    if let Some(reply) = self.exchange.on_mailbox(ticket, answer) {
                        self.send(&reply, &peer, &mut quiet).await;
                    }
                }
                Some(peer) = settled.recv() => {
                    if let Some((device, until)) = windows.get(&peer).cloned() {
                        if Instant::now() < until {
                            self.push(&mut pushes, &device, &peer, &mut quiet).await;
                        }
                    }
                }
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                }
                () = &mut timer, if due.is_some() => {
                    let now = Instant::now();
                    if self.link.poll_timeout().is_some_and(|at| at <= now) {
                        self.link.handle_timeout(now);
                    }
                    let (resend, gave_up) = pushes.on_timeout(now);
                    for (bytes, peer) in resend {
                        self.send(&bytes, &peer, &mut quiet).await;
                    }
                    for outcome in gave_up {
                        self.settle(outcome, &settled_tx);
                    }
                }
                _ = publish.tick() => {
                    self.metrics.set_handshakes(self.link.handshakes());
                    let mut tables = vec![
                        ("dedup", self.exchange.dedup_len() as u64),
                        ("uploads", self.exchange.uploads_len() as u64),
                    ];
                    tables.extend(self.link.tables());
                    self.metrics.set_tables(tables);
                }
                received = self.link.recv(&mut buf), if !stopping => {
                    let (len, peer) = match received {
                        Ok(x) => x,
                        Err(e) => {
                            // ICMP errors from earlier sends surface here on
                            // some systems; they concern one peer, not us.
                            if quiet.admit("recv", Instant::now()).is_some() {
                                log::warn!("coap {}: receive error: {e}", self.link.name());
                            }
                            continue;
                        }
                    };
                    self.metrics.datagram(&buf[..len]);
                    // Answers to the gateway's own requests first; the rest
                    // is the exchange's.
                    if let Received::Ours { ack, outcome } = pushes.on_datagram(&peer, &buf[..len]) {
                        if let Some(ack) = ack {
                            self.send(&ack, &peer, &mut quiet).await;
                        }
                        if let Some(outcome) = outcome {
                            self.settle(outcome, &settled_tx);
                        }
                        continue;
                    }
                    let routes = self.routes.borrow().clone();
                    let received_ms = now_ms();
                    let step = self.exchange.on_datagram(&peer, &buf[..len], &routes, Instant::now(), received_ms);
                    self.record_sightings();
                    match step {
                        Step::Reply(bytes) => self.send(&bytes, &peer, &mut quiet).await,
                        Step::Store { ticket, messages } => {
                            let topic = messages.first().map_or("", |m| m.topic.as_str());
                            log::debug!(coap_peer:% = peer.addr, coap_identity = peer.identity.as_deref().unwrap_or(""), mqtt_topic = topic; "coap {}: request from {} for {topic} ({} message(s))", self.link.name(), Device(&peer), messages.len());
                            let command = Command::Append {
                                messages,
                                received_ms,
                                recall: ticket.recall().encode(),
                                receipt: Receipt::Request(ticket),
                                reply: committed_tx.clone(),
                            };
                            if self.store.send(command).await.is_err() {
                                log::error!("coap {}: the store has stopped; not taking requests", self.link.name());
                                stopping = true;
                                continue;
                            }
                            awaiting_store += 1;
                        }
                        Step::Mailbox { ticket, request } => {
                            let Some(service) = self.commands.clone() else {
                                if let Some(reply) = self.exchange.on_mailbox(ticket, MailboxAnswer::Unknown) {
                                    self.send(&reply, &peer, &mut quiet).await;
                                }
                                continue;
                            };
                            match request {
                                MailboxRequest::Poll { device } => {
                                    let asker = Asker { device: &device, identity: peer.identity.as_deref() };
                                    let answer = match service.poll(asker, now_ms()) {
                                        Poll::Command(h) => MailboxAnswer::Command(Carried { id: h.id, resource: h.resource, payload: h.payload }),
                                        Poll::Empty => MailboxAnswer::Empty,
                                        Poll::Forbidden => MailboxAnswer::Forbidden,
                                    };
                                    if let Some(reply) = self.exchange.on_mailbox(ticket, answer) {
                                        self.send(&reply, &peer, &mut quiet).await;
                                    }
                                }
                                MailboxRequest::Report { device, id, code, payload } => {
                                    // The journal's fsync: off the runtime's workers.
                                    let identity = peer.identity.clone();
                                    let reported_tx = reported_tx.clone();
                                    awaiting_store += 1;
                                    tokio::task::spawn_blocking(move || {
                                        let asker = Asker { device: &device, identity: identity.as_deref() };
                                        let answer = match service.report(asker, id, &code, payload) {
                                            Report::Recorded => MailboxAnswer::Recorded,
                                            Report::Unknown => MailboxAnswer::Unknown,
                                            Report::Forbidden => MailboxAnswer::Forbidden,
                                            Report::Failed => MailboxAnswer::Failed,
                                        };
                                        let _ = reported_tx.send((ticket, answer));
                                    });
                                }
                            }
                        }
                        Step::Ignore(why) => {
                            self.metrics.dropped(why.reason());
                            if let Some(held) = quiet.admit("ignored", Instant::now()) {
                                log::info!(
                                    coap_peer:% = peer.addr, drop_reason = why.reason();
                                    "coap {}: ignored a datagram from {}: {why:?} ({held} more ignored since the last such line)",
                                    self.link.name(),
                                    Device(&peer)
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The answer to a request whose messages the store has settled, into
    /// `answers`; a device stored for while the gateway has commands goes
    /// into `awake`, to be sent its next push after the answer.
    fn answer_stored(
        &mut self,
        ticket: Ticket,
        outcome: StoreOutcome,
        answers: &mut Vec<(Vec<u8>, Peer)>,
        awake: &mut Vec<(String, Peer)>,
    ) {
        let peer = ticket.peer().clone();
        // A device whose message is stored listens now: it may carry a
        // command in the answer, or be pushed one after it.
        let listening = match (&self.commands, ticket.device()) {
            (Some(service), Some(device)) if outcome == StoreOutcome::Stored => {
                Some((service, device))
            }
            _ => None,
        };
        let carried = listening
            .filter(|_| ticket.can_carry())
            .and_then(|(service, device)| {
                let asker = Asker {
                    device,
                    identity: peer.identity.as_deref(),
                };
                service.piggyback(asker, now_ms())
            })
            .map(|h| Carried {
                id: h.id,
                resource: h.resource,
                payload: h.payload,
            });
        let device = listening.map(|(_, device)| device.to_string());
        if let Some(reply) =
            self.exchange
                .on_stored_carrying(ticket, outcome, Instant::now(), carried)
        {
            answers.push((reply, peer.clone()));
        }
        if let Some(device) = device {
            awake.push((device, peer));
        }
    }

    /// Sends `device` (at `peer`, which just uploaded) its next push
    /// command, unless one is on its way to that address already.
    /// Returns when the device's window closes, when a command was sent.
    async fn push(
        &mut self,
        pushes: &mut Client,
        device: &str,
        peer: &Peer,
        quiet: &mut RateLimited,
    ) -> Option<Instant> {
        let service = self.commands.as_ref()?;
        if pushes.busy_with(peer) {
            return None;
        }
        let asker = Asker {
            device,
            identity: peer.identity.as_deref(),
        };
        let handed = service.push(asker, now_ms())?;
        let request = PushRequest {
            command: handed.id,
            method: handed.method,
            resource: handed.resource,
            payload: handed.payload,
        };
        let now = Instant::now();
        let token = Token::new(&rand::random::<[u8; 4]>()).unwrap_or_default();
        let window = now + Duration::from_secs(u64::from(handed.awake_s));
        let message_id = self.exchange.next_message_id();
        let bytes = pushes.send(
            peer.clone(),
            &request,
            message_id,
            token,
            rand::random(),
            now,
            window,
        )?;
        log::debug!(
            "coap {}: pushing command {} to {}",
            self.link.name(),
            request.command,
            Device(peer)
        );
        self.send(&bytes, peer, quiet).await;
        Some(window)
    }

    /// What a push came to: the device's answer settles the command (the
    /// journal's fsync, off the runtime's workers); no answer leaves it
    /// pending for the device's next upload.
    fn settle(&self, outcome: PushOutcome, settled: &mpsc::UnboundedSender<Peer>) {
        let Some(service) = self.commands.clone() else {
            return;
        };
        let (command, peer, code, payload) = match outcome {
            PushOutcome::Answered {
                command,
                peer,
                code: (class, detail),
                payload,
            } => (command, peer, format!("{class}.{detail:02}"), payload),
            PushOutcome::Reset { command, peer } => (command, peer, "RST".to_string(), Vec::new()),
            PushOutcome::GaveUp { command, peer } => {
                log::info!(
                    "coap {}: {} did not answer command {command} in its window; it stays queued for its next upload",
                    self.link.name(),
                    Device(&peer)
                );
                return;
            }
        };
        let settled = settled.clone();
        tokio::task::spawn_blocking(move || {
            let Some(device) = service.device_of(command) else {
                return;
            };
            let asker = Asker {
                device: &device,
                identity: peer.identity.as_deref(),
            };
            service.report(asker, command, &code, payload);
            let _ = settled.send(peer);
        });
    }

    /// Hands what devices did to the shared device table (one short lock,
    /// only when there is something to record).
    fn record_sightings(&mut self) {
        let mut sightings = self.exchange.take_sightings().peekable();
        if sightings.peek().is_none() {
            return;
        }
        let now = now_ms();
        let mut table = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        for sighting in sightings {
            table.record(&sighting, now);
        }
    }

    /// Counts a datagram about to be sent (and traces it).
    fn sending(&mut self, bytes: &[u8], peer: &Peer) {
        self.metrics.response(bytes);
        log::trace!(coap_peer:% = peer.addr, coap_code:% = crate::logging::coap_code(bytes); "coap {}: answer to {}", self.link.name(), Device(peer));
    }

    /// Sends the answers in `answers` and empties it.
    async fn send_all(&mut self, answers: &mut Vec<(Vec<u8>, Peer)>, quiet: &mut RateLimited) {
        for (bytes, peer) in answers.iter() {
            self.sending(bytes, peer);
        }
        let failed = self.link.send_all(answers).await;
        if let Some((i, e)) = failed.first() {
            if quiet.admit("send", Instant::now()).is_some() {
                log::warn!(
                    "coap {}: cannot answer {}: {e} ({} of {} answers failed)",
                    self.link.name(),
                    Device(&answers[*i].1),
                    failed.len(),
                    answers.len()
                );
            }
        }
        answers.clear();
    }

    async fn send(&mut self, bytes: &[u8], peer: &Peer, quiet: &mut RateLimited) {
        self.sending(bytes, peer);
        if let Err(e) = self.link.send(bytes, peer).await {
            if quiet.admit("send", Instant::now()).is_some() {
                log::warn!(
                    "coap {}: cannot answer {}: {e}",
                    self.link.name(),
                    Device(peer)
                );
            }
        }
    }
}

/// A peer as the logs show it: `10.0.0.7:5684 (sensor-01)`.
pub struct Device<'a>(pub &'a Peer);

impl std::fmt::Display for Device<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.identity {
            Some(identity) => write!(f, "{} ({identity})", self.0.addr),
            None => write!(f, "{}", self.0.addr),
        }
    }
}

fn store_outcome(outcome: AppendOutcome) -> StoreOutcome {
    match outcome {
        AppendOutcome::Stored => StoreOutcome::Stored,
        // Both mean "not now, ask again later": 5.03 with Max-Age.
        AppendOutcome::Full | AppendOutcome::Unavailable => StoreOutcome::Full,
        AppendOutcome::Failed => StoreOutcome::Failed,
    }
}

#[cfg(test)]
mod tests;
