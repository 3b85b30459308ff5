//! The tasks around the command service: the intake (PUBLISHes from the
//! uplink, journaled, then acked), the results (into the main queue, like a
//! device's message) and the expiry timer.

use super::service::{Incoming, Intake, Published, Service};
use crate::clock::now_ms;
use crate::message::{Message, Meta, Qos};
use crate::store::{AppendOutcome, Command, StoreHandle};
use crate::transport::Receipt;
use crate::uplink::{AckFor, CommandLink, FromBroker};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The expiry timer's longest sleep.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// Starts the tasks; returns the uplink's end of the intake.
pub fn spawn(
    service: Arc<Service>,
    results: mpsc::UnboundedReceiver<Published>,
    store: StoreHandle<Receipt>,
    shutdown: watch::Receiver<bool>,
) -> CommandLink {
    let (intake_tx, intake_rx) = mpsc::unbounded_channel();
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    tokio::spawn(intake(service.clone(), intake_rx, acks_tx));
    tokio::spawn(forward_results(results, store));
    tokio::spawn(expire(service, shutdown));
    CommandLink {
        intake: intake_tx,
        acks: acks_rx,
    }
}

/// One PUBLISH at a time, in the broker's order: journaled (fsync) on the
/// blocking pool, then its PUBACK is asked of the uplink.
async fn intake(
    service: Arc<Service>,
    mut rx: mpsc::UnboundedReceiver<FromBroker>,
    acks: mpsc::UnboundedSender<AckFor>,
) {
    while let Some(FromBroker { session, publish }) = rx.recv().await {
        let (pkid, qos1) = (publish.pkid, publish.qos1);
        let incoming = Incoming {
            topic: publish.topic,
            payload: publish.payload,
            expiry_s: publish.expiry_s,
            response_topic: publish.response_topic,
            correlation: publish.correlation,
            redelivered: publish.dup,
        };
        let service = service.clone();
        let outcome = tokio::task::spawn_blocking(move || service.intake(incoming, now_ms())).await;
        match outcome {
            Ok(Ok(Intake::Queued(_) | Intake::Rejected(_) | Intake::NoTable | Intake::Repeat(_))) => {
                if qos1 {
                    let _ = acks.send(AckFor { session, pkid });
                }
            }
            Ok(Err(e)) => log::error!(
                "commands: cannot journal a command ({e}); not acknowledged, the broker sends it again after a reconnect"
            ),
            Err(e) => log::error!("commands: the intake failed: {e}"),
        }
    }
}

/// Results go through the main queue: on disk, in order, delivered like
/// devices' messages.
async fn forward_results(
    mut results: mpsc::UnboundedReceiver<Published>,
    store: StoreHandle<Receipt>,
) {
    let (reply, mut outcomes) = mpsc::unbounded_channel::<(Receipt, AppendOutcome)>();
    loop {
        tokio::select! {
            Some((_, outcome)) = outcomes.recv() => {
                if outcome != AppendOutcome::Stored {
                    log::warn!("commands: a result could not be queued ({outcome:?}); it is lost");
                }
            }
            published = results.recv() => {
                let Some(published) = published else { return };
                let message = Message {
                    topic: published.topic,
                    payload: published.payload,
                    qos: Qos::AtLeastOnce,
                    retain: false,
                    meta: Meta {
                        translated: true,
                        correlation: published.correlation,
                        ..Meta::default()
                    },
                };
                let command = Command::Append {
                    messages: vec![message],
                    received_ms: now_ms(),
                    recall: Vec::new(),
                    receipt: Receipt::CommandResult,
                    reply: reply.clone(),
                };
                if store.send(command).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn expire(service: Arc<Service>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let s = service.clone();
        let next = tokio::task::spawn_blocking(move || s.expire(now_ms()))
            .await
            .ok()
            .flatten();
        let wait = next
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
            .unwrap_or(EXPIRY_TICK)
            .min(EXPIRY_TICK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
