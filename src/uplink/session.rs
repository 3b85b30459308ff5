//! What the uplink decides, whatever the MQTT version: which queued
//! message may go out, what a written publish, an ack or a closed
//! connection means for the queue, and when a message has failed often
//! enough to be set aside. No I/O and no clock: the shells (`client.rs`)
//! turn rumqttc's events into calls here and carry out the decisions, and
//! the tests drive it with plain values.
//!
//! The rules:
//! - A message leaves the queue on its PUBACK with a success reason (QoS 1)
//!   or once written (QoS 0). rumqttc does not say which packet id a
//!   publish got; it reports each as written, in request order, so the
//!   messages handed to it wait in a FIFO until their id is known.
//! - A PUBACK with a reason code of 0x80 or more is not an ack. Permanent
//!   refusals (0x87 not authorized, 0x90 topic name invalid, 0x95 packet
//!   too large, 0x99 payload format invalid) dead-letter the message at
//!   once; the others (0x80 unspecified, 0x83 implementation specific,
//!   0x91 packet id in use, 0x97 quota exceeded) end the connection, so
//!   that after the reconnect pause the message is sent again first, in
//!   queue order.
//! - A message the broker closes the connection on while it is the oldest
//!   in flight collects a strike; the next connection sends such suspects
//!   one at a time, and `max_attempts` strikes dead-letter it. Timeouts and
//!   refusals charge nothing: an outage is not the message's fault.
//! - The window is the smaller of `mqtt.inflight` and the broker's Receive
//!   Maximum; a message larger than the smaller of `mqtt.max_packet_size`
//!   and the broker's Maximum Packet Size is dead-lettered, never sent.
//! - A message whose route set `expiry_s` and which waited longer than
//!   that in the queue is removed unpublished (counted).

use crate::message::Qos;
use crate::store::Seq;
use std::collections::{HashMap, VecDeque};

/// What the uplink hands rumqttc and waits to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Message {
        seq: Seq,
        qos: Qos,
    },
    /// The retained status message (`online`/`offline`).
    Status,
}

/// What the broker said in its CONNACK that limits us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub receive_max: Option<u16>,
    pub max_packet_size: Option<u32>,
}

/// What a PUBACK's reason code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// Below 0x80 (MQTT 3.1.1 PUBACKs always): the broker has it.
    Taken,
    /// Worth trying again after a pause.
    Retry(u8),
    /// The broker will never take this message.
    Refused(u8),
}

impl AckKind {
    pub fn of(reason: u8) -> AckKind {
        match reason {
            0x00..=0x7f => AckKind::Taken,
            0x87 | 0x90 | 0x95 | 0x99 => AckKind::Refused(reason),
            other => AckKind::Retry(other),
        }
    }
}

/// The name MQTT 5 gives a PUBACK reason code, for logs and metrics.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "success",
        0x10 => "no_matching_subscribers",
        0x80 => "unspecified_error",
        0x83 => "implementation_specific_error",
        0x87 => "not_authorized",
        0x90 => "topic_name_invalid",
        0x91 => "packet_identifier_in_use",
        0x95 => "packet_too_large",
        0x97 => "quota_exceeded",
        0x99 => "payload_format_invalid",
        _ => "other",
    }
}

/// What to do with the queue (or the connection) after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing for the queue.
    Keep,
    /// The broker has it (or it was written, QoS 0): retire it.
    Remove(Seq),
    /// Move it to the dead letters, with why.
    DeadLetter(Seq, String),
    /// End this connection and send again after the reconnect pause.
    Reconnect(String),
    /// The `offline` status was acked: the goodbye is done.
    GoodbyeDone,
}

/// What to do with a queued message before handing it to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Publish,
    DeadLetter(String),
    /// Waited longer than its route's `expiry_s`: remove it unpublished.
    Expired,
}

/// What outlives a connection: the strikes against messages, and the
/// highest sequence number ever handed to a client (to count resends).
#[derive(Debug)]
pub struct Core {
    max_attempts: u32,
    strikes: HashMap<Seq, u32>,
    highest_published: Option<Seq>,
}

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    /// How many may be in flight: `mqtt.inflight`, the broker's Receive
    /// Maximum, or 1 while suspects are being sent.
    window: usize,
    full_window: usize,
    /// The broker's Receive Maximum made the window smaller than ours.
    window_by_broker: bool,
    max_packet_size: usize,
    /// Handed to the client, waiting for their packet id.
    unwritten: VecDeque<Slot>,
    /// Written with a packet id, waiting for PUBACK.
    unacked: HashMap<u16, Slot>,
    pub goodbye_pending: bool,
}

impl Session {
    /// How many more messages may be handed to the client now.
    pub fn room(&self) -> usize {
        self.window
            .saturating_sub(self.unwritten.len() + self.unacked.len())
    }

    pub fn in_flight(&self) -> usize {
        self.unwritten.len() + self.unacked.len()
    }

    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// The window this connection allows once no suspect is being sent:
    /// `mqtt.inflight`, or the broker's Receive Maximum when lower.
    pub fn full_window(&self) -> usize {
        self.full_window
    }

    /// Whether the broker's Receive Maximum set [`Session::full_window`].
    pub fn window_by_broker(&self) -> bool {
        self.window_by_broker
    }
}

impl Core {
    pub fn new(max_attempts: u32) -> Core {
        Core {
            max_attempts: max_attempts.max(1),
            strikes: HashMap::new(),
            highest_published: None,
        }
    }

    /// A connection was accepted. Returns its session and the suspects
    /// that have had their last chance (to dead-letter before anything).
    pub fn begin(
        &mut self,
        limits: Limits,
        inflight: u16,
        max_packet_size: usize,
    ) -> (Session, Vec<Decision>) {
        let ours = usize::from(inflight.max(1));
        let window = match limits.receive_max {
            Some(receive_max) => ours.min(usize::from(receive_max.max(1))),
            None => ours,
        };
        let max_packet_size = match limits.max_packet_size {
            Some(broker) => max_packet_size.min(broker as usize),
            None => max_packet_size,
        };
        let limit = self.max_attempts;
        let mut doomed: Vec<Seq> = self
            .strikes
            .iter()
            .filter(|(_, n)| **n >= limit)
            .map(|(seq, _)| *seq)
            .collect();
        doomed.sort_unstable();
        let decisions = doomed
            .into_iter()
            .map(|seq| {
                self.strikes.remove(&seq);
                Decision::DeadLetter(
                    seq,
                    format!("the broker closed the connection {limit} times while this message was in flight"),
                )
            })
            .collect();
        let session = Session {
            window: if self.strikes.is_empty() { window } else { 1 },
            full_window: window,
            window_by_broker: window < ours,
            max_packet_size,
            unwritten: VecDeque::new(),
            unacked: HashMap::new(),
            goodbye_pending: false,
        };
        (session, decisions)
    }

    /// Whether a queued message may be published: `packet_size` is what
    /// its PUBLISH takes in this connection's protocol; `age_ms` how long it
    /// waited; `expiry_s` its route's, if any.
    pub fn admit(
        &self,
        session: &Session,
        packet_size: usize,
        age_ms: u64,
        expiry_s: Option<u32>,
    ) -> Admission {
        if packet_size > session.max_packet_size {
            return Admission::DeadLetter(format!(
                "MQTT packet of {packet_size} bytes exceeds the maximum packet size ({})",
                session.max_packet_size
            ));
        }
        if expiry_s.is_some_and(|s| age_ms >= u64::from(s) * 1000) {
            return Admission::Expired;
        }
        Admission::Publish
    }

    /// The message was handed to the client. Returns true when it had been
    /// handed to an earlier one already (a resend).
    pub fn handed(&mut self, session: &mut Session, slot: Slot) -> bool {
        session.unwritten.push_back(slot);
        let Slot::Message { seq, .. } = slot else {
            return false;
        };
        match self.highest_published {
            Some(h) if seq <= h => true,
            _ => {
                self.highest_published = Some(seq);
                false
            }
        }
    }

    /// rumqttc wrote a publish with `pkid` (the oldest handed over).
    pub fn written(&mut self, session: &mut Session, pkid: u16) -> Decision {
        match session.unwritten.pop_front() {
            Some(Slot::Message {
                seq,
                qos: Qos::AtMostOnce,
            }) => Decision::Remove(seq),
            Some(slot) => {
                session.unacked.insert(pkid, slot);
                Decision::Keep
            }
            None => Decision::Keep,
        }
    }

    /// A PUBACK for `pkid` with `reason` (0 for MQTT 3.1.1).
    pub fn acked(&mut self, session: &mut Session, pkid: u16, reason: u8) -> Decision {
        let Some(slot) = session.unacked.remove(&pkid) else {
            return Decision::Keep;
        };
        let seq = match slot {
            Slot::Status if session.goodbye_pending => return Decision::GoodbyeDone,
            Slot::Status => return Decision::Keep,
            Slot::Message { seq, .. } => seq,
        };
        match AckKind::of(reason) {
            AckKind::Taken => {
                // Messages go in queue order: every suspect up to this one
                // has been acked or has left the queue otherwise.
                self.strikes.retain(|suspect, _| *suspect > seq);
                if self.strikes.is_empty() {
                    session.window = session.full_window;
                }
                Decision::Remove(seq)
            }
            AckKind::Refused(code) => Decision::DeadLetter(
                seq,
                format!("the broker refused it: PUBACK reason {code:#04x} ({})", reason_name(code)),
            ),
            AckKind::Retry(code) => Decision::Reconnect(format!(
                "the broker did not take message {seq}: PUBACK reason {code:#04x} ({}); sending it again after the reconnect pause",
                reason_name(code)
            )),
        }
    }

    /// The connection ended; `by_broker`: the broker closed it (not a
    /// timeout, not a refused connect). Charges a strike to the oldest
    /// message in flight then, and returns it.
    pub fn closed(&mut self, session: &Session, by_broker: bool) -> Option<(Seq, u32)> {
        if !by_broker {
            return None;
        }
        let oldest = session
            .unwritten
            .iter()
            .chain(session.unacked.values())
            .filter_map(|slot| match slot {
                Slot::Message { seq, .. } => Some(*seq),
                Slot::Status => None,
            })
            .min()?;
        let n = self.strikes.entry(oldest).or_insert(0);
        *n += 1;
        Some((oldest, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: Seq) -> Slot {
        Slot::Message {
            seq,
            qos: Qos::AtLeastOnce,
        }
    }

    fn session(core: &mut Core) -> Session {
        core.begin(Limits::default(), 4, 1_000).0
    }

    #[test]
    fn a_message_leaves_on_its_success_puback_not_before() {
        let mut core = Core::new(3);
        let mut s = session(&mut core);
        core.handed(&mut s, msg(1));
        assert_eq!(core.written(&mut s, 7), Decision::Keep);
        assert_eq!(core.acked(&mut s, 7, 0), Decision::Remove(1));
        assert_eq!(core.acked(&mut s, 7, 0), Decision::Keep, "twice");
    }

    #[test]
    fn a_qos_0_message_leaves_once_written() {
        let mut core = Core::new(3);
        let mut s = session(&mut core);
        core.handed(
            &mut s,
            Slot::Message {
                seq: 4,
                qos: Qos::AtMostOnce,
            },
        );
        assert_eq!(core.written(&mut s, 0), Decision::Remove(4));
    }

    #[test]
    fn packet_ids_are_paired_in_the_order_messages_were_handed_over() {
        let mut core = Core::new(3);
        let mut s = session(&mut core);
        core.handed(&mut s, msg(1));
        core.handed(&mut s, msg(2));
        core.written(&mut s, 10);
        core.written(&mut s, 11);
        assert_eq!(core.acked(&mut s, 11, 0), Decision::Remove(2));
        assert_eq!(core.acked(&mut s, 10, 0), Decision::Remove(1));
    }

    #[test]
    fn a_permanent_refusal_dead_letters_and_is_never_an_ack() {
        let mut core = Core::new(3);
        let mut s = session(&mut core);
        for (pkid, code) in [(1u16, 0x87u8), (2, 0x90), (3, 0x95), (4, 0x99)] {
            core.handed(&mut s, msg(Seq::from(pkid)));
            core.written(&mut s, pkid);
            match core.acked(&mut s, pkid, code) {
                Decision::DeadLetter(seq, why) => {
                    assert_eq!(seq, Seq::from(pkid));
                    assert!(why.contains(reason_name(code)), "{why}");
                }
                other => panic!("{code:#x}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_retryable_refusal_reconnects_and_keeps_the_message() {
        let mut core = Core::new(3);
        for code in [0x80u8, 0x83, 0x91, 0x97] {
            let mut s = session(&mut core);
            core.handed(&mut s, msg(5));
            core.written(&mut s, 1);
            assert!(
                matches!(core.acked(&mut s, 1, code), Decision::Reconnect(_)),
                "{code:#x}"
            );
        }
    }

    #[test]
    fn reasons_below_0x80_are_acks() {
        assert_eq!(AckKind::of(0x10), AckKind::Taken);
        assert_eq!(AckKind::of(0x80), AckKind::Retry(0x80));
        assert_eq!(AckKind::of(0x87), AckKind::Refused(0x87));
    }

    #[test]
    fn the_window_is_the_smaller_of_ours_and_the_brokers_receive_maximum() {
        let mut core = Core::new(3);
        let limits = Limits {
            receive_max: Some(2),
            max_packet_size: Some(500),
        };
        let (mut s, _) = core.begin(limits, 64, 1_000);
        assert_eq!((s.room(), s.max_packet_size()), (2, 500));
        assert_eq!((s.full_window(), s.window_by_broker()), (2, true));
        let (ours, _) = core.begin(Limits::default(), 64, 1_000);
        assert_eq!((ours.full_window(), ours.window_by_broker()), (64, false));
        core.handed(&mut s, msg(1));
        core.handed(&mut s, msg(2));
        assert_eq!(s.room(), 0);
        assert_eq!(
            core.admit(&s, 501, 0, None),
            Admission::DeadLetter(
                "MQTT packet of 501 bytes exceeds the maximum packet size (500)".into()
            )
        );
    }

    #[test]
    fn a_message_older_than_its_expiry_is_not_published() {
        let mut core = Core::new(3);
        let s = session(&mut core);
        assert_eq!(core.admit(&s, 10, 59_999, Some(60)), Admission::Publish);
        assert_eq!(core.admit(&s, 10, 60_000, Some(60)), Admission::Expired);
        assert_eq!(core.admit(&s, 10, u64::MAX, None), Admission::Publish);
    }

    #[test]
    fn a_broker_close_charges_the_oldest_in_flight_and_its_suspects_go_alone_then_die() {
        let mut core = Core::new(2);
        let mut s = session(&mut core);
        core.handed(&mut s, msg(8));
        core.handed(&mut s, msg(9));
        core.written(&mut s, 1);
        assert_eq!(core.closed(&s, false), None, "a timeout charges nothing");
        assert_eq!(core.closed(&s, true), Some((8, 1)));
        let (s, doomed) = core.begin(Limits::default(), 4, 1_000);
        assert!(doomed.is_empty());
        assert_eq!(s.room(), 1, "suspects go one at a time");
        assert_eq!(
            core.closed(&s, true),
            None,
            "nothing in flight, nothing charged"
        );
        let mut s = s;
        core.handed(&mut s, msg(8));
        assert_eq!(core.closed(&s, true), Some((8, 2)));
        let (_, doomed) = core.begin(Limits::default(), 4, 1_000);
        assert!(matches!(&doomed[..], [Decision::DeadLetter(8, _)]));
    }

    #[test]
    fn an_ack_clears_the_suspects_up_to_it_and_opens_the_window() {
        let mut core = Core::new(3);
        let mut s = session(&mut core);
        core.handed(&mut s, msg(3));
        core.closed(&s, true);
        let (mut s, _) = core.begin(Limits::default(), 4, 1_000);
        assert_eq!(s.room(), 1);
        core.handed(&mut s, msg(3));
        core.written(&mut s, 1);
        assert_eq!(core.acked(&mut s, 1, 0), Decision::Remove(3));
        assert_eq!(s.room(), 4);
    }

    #[test]
    fn a_resend_is_told_apart_from_a_first_send() {
        let mut core = Core::new(3);
        let mut s = session(&mut core);
        assert!(!core.handed(&mut s, msg(1)));
        let (mut s, _) = core.begin(Limits::default(), 4, 1_000);
        assert!(core.handed(&mut s, msg(1)));
        assert!(!core.handed(&mut s, msg(2)));
    }

    #[test]
    fn the_goodbye_is_done_when_offline_is_acked() {
        let mut core = Core::new(3);
        let mut s = session(&mut core);
        core.handed(&mut s, Slot::Status);
        core.written(&mut s, 1);
        s.goodbye_pending = true;
        assert_eq!(core.acked(&mut s, 1, 0), Decision::GoodbyeDone);
    }
}
