//! Plain CoAP over UDP: one task per socket, owning that socket's exchange.
//!
//! The task is a thin shell around the sans-IO [`Exchange`]: datagrams in,
//! decisions out. A message to keep goes to the store's committer with a
//! ticket; the device is answered only when the committer hands the ticket
//! back with the outcome of the flush. One task owns the exchange, so its
//! tables need no locks.
//!
//! Backpressure: when the committer's channel is full this task waits, stops
//! reading the socket, and the kernel's receive buffer (then the devices'
//! retransmissions) absorb the burst. Nothing is answered that is not stored.

use crate::coap::exchange::{Exchange, Peer, Step, StoreOutcome, Ticket};
use crate::logging::RateLimited;
use crate::metrics::{TransportMetrics, PUBLISH_EVERY};
use crate::route::Router;
use crate::store::{now_ms, AppendOutcome, Command, StoreHandle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Largest UDP payload; a larger read would be truncated.
const MAX_DATAGRAM: usize = 65_535;

pub struct UdpServer {
    pub socket: UdpSocket,
    pub exchange: Exchange,
    pub routes: watch::Receiver<Arc<Router>>,
    pub store: StoreHandle<Ticket>,
    pub metrics: TransportMetrics,
}

impl UdpServer {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `shutdown`; then stops reading, answers every message
    /// already handed to the store, and returns.
    pub async fn serve(mut self, mut shutdown: watch::Receiver<bool>) {
        let local = self
            .socket
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (committed_tx, mut committed) = mpsc::unbounded_channel::<(Ticket, AppendOutcome)>();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut awaiting_store = 0usize;
        let mut stopping = false;
        let mut quiet = RateLimited::new(Duration::from_secs(10));
        let mut publish = tokio::time::interval(PUBLISH_EVERY);
        loop {
            self.metrics
                .maybe_publish(self.exchange.counters(), Instant::now());
            if stopping && awaiting_store == 0 {
                self.metrics.publish(self.exchange.counters());
                log::debug!("coap {local}: stopped");
                return;
            }
            tokio::select! {
                biased;
                Some((ticket, outcome)) = committed.recv() => {
                    awaiting_store -= 1;
                    let addr = ticket.peer().addr;
                    if let Some(reply) = self.exchange.on_stored(ticket, store_outcome(outcome), Instant::now()) {
                        self.send(&reply, addr, &mut quiet).await;
                    }
                }
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                }
                _ = publish.tick() => {}
                received = self.socket.recv_from(&mut buf), if !stopping => {
                    let (len, addr) = match received {
                        Ok(x) => x,
                        Err(e) => {
                            // ICMP errors from earlier sends surface here on
                            // some systems; they concern one peer, not us.
                            if quiet.admit("recv", Instant::now()).is_some() {
                                log::warn!("coap {local}: receive error: {e}");
                            }
                            continue;
                        }
                    };
                    self.metrics.datagram(&buf[..len]);
                    let peer = Peer { addr, identity: None };
                    let routes = self.routes.borrow().clone();
                    match self.exchange.on_datagram(&peer, &buf[..len], &routes, Instant::now()) {
                        Step::Reply(bytes) => self.send(&bytes, addr, &mut quiet).await,
                        Step::Store { ticket, message } => {
                            log::debug!(coap_peer:% = addr, mqtt_topic = message.topic.as_str(); "coap {local}: request from {addr} for {}", message.topic);
                            let command = Command::Append {
                                message,
                                received_ms: now_ms(),
                                receipt: ticket,
                                reply: committed_tx.clone(),
                            };
                            if self.store.send(command).await.is_err() {
                                log::error!("coap {local}: the store has stopped; not taking requests");
                                stopping = true;
                                continue;
                            }
                            awaiting_store += 1;
                        }
                        Step::Ignore(why) => {
                            self.metrics.dropped(why.reason());
                            if let Some(held) = quiet.admit("ignored", Instant::now()) {
                                log::info!(coap_peer:% = addr, drop_reason = why.reason(); "coap {local}: ignored a datagram from {addr}: {why:?} ({held} more ignored since the last such line)");
                            }
                        }
                    }
                }
            }
        }
    }

    async fn send(&mut self, bytes: &[u8], addr: SocketAddr, quiet: &mut RateLimited) {
        self.metrics.response(bytes);
        log::trace!(coap_peer:% = addr, coap_code:% = crate::logging::coap_code(bytes); "coap: answer to {addr}");
        if let Err(e) = self.socket.send_to(bytes, addr).await {
            if quiet.admit("send", Instant::now()).is_some() {
                log::warn!("coap: cannot answer {addr}: {e}");
            }
        }
    }
}

fn store_outcome(outcome: AppendOutcome) -> StoreOutcome {
    match outcome {
        AppendOutcome::Stored => StoreOutcome::Stored,
        AppendOutcome::Full => StoreOutcome::Full,
        AppendOutcome::Failed => StoreOutcome::Failed,
    }
}
