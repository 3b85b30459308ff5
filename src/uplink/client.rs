//! One connection to one broker, in MQTT 3.1.1 or 5, behind one face.
//!
//! rumqttc has a client per protocol version with their own packet,
//! event and error types. This module is the only place that knows both:
//! it builds the options (TLS, WebSocket, HTTP proxy, last will), waits for
//! the CONNACK, publishes (with MQTT 5 properties when the version has
//! them), and turns each version's events and errors into the [`Observed`]
//! and [`Lost`] the session loop understands.
//!
//! The event loop is polled by a task of its own ([`EventPump`]): rumqttc
//! records a publish (and emits its `Outgoing::Publish` event) inside one
//! `poll()` before it has written it, so a poll must never be dropped half
//! way, as a `select!` would.

use super::session::Limits;
use super::Settings;
use crate::config::{Endpoint, Scheme};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The protocol version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Version::V311 => "MQTT 3.1.1",
            Version::V5 => "MQTT 5",
        }
    }
}

/// What the session hears from a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A publish was written with this packet id (QoS 0: 0).
    Written(u16),
    /// A PUBACK, with its reason code (always 0 in MQTT 3.1.1).
    Acked {
        pkid: u16,
        reason: u8,
    },
    DisconnectWritten,
    /// A PUBLISH from the broker (a command; see `crate::command`).
    Incoming(Inbound),
    /// The broker confirmed the command subscriptions (SUBACK), with
    /// whether every filter was granted.
    Subscribed {
        granted: bool,
    },
    Other,
}

/// A PUBLISH the broker sent us, as the command intake needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
    pub pkid: u16,
    /// QoS 1: it waits for our PUBACK (manual acks).
    pub qos1: bool,
    /// The broker sends it again (a session resumed before our PUBACK).
    pub dup: bool,
    pub expiry_s: Option<u32>,
    pub response_topic: Option<String>,
    pub correlation: Option<Vec<u8>>,
}

/// Why a connection ended or could not be made.
#[derive(Debug, Clone)]
pub struct Lost {
    /// In words an operator can act on.
    pub why: String,
    /// The broker closed it (not a timeout, not a refused connect): the
    /// oldest message in flight is suspect.
    pub by_broker: bool,
    /// An MQTT 5 CONNECT the broker may not understand (it refused the
    /// version, or answered or closed in a way a 3.1.1 broker would): worth
    /// trying again in 3.1.1 under `protocol = "auto"`.
    pub maybe_not_v5: bool,
}

/// A message to publish, as the client needs it.
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos1: bool,
    pub retain: bool,
    /// MQTT 5 only.
    pub properties: Option<rumqttc::v5::mqttbytes::v5::PublishProperties>,
}

enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A connected session's client and its event pump.
pub struct Connection {
    client: Client,
    pub events: EventPump,
    pub version: Version,
}

impl Connection {
    /// Connects and waits for the CONNACK; returns what the broker allows.
    pub async fn open(
        settings: &Settings,
        endpoint: &Endpoint,
        version: Version,
    ) -> Result<(Connection, Limits), Lost> {
        let capacity = usize::from(settings.inflight.max(1)) + 8;
        match version {
            Version::V311 => {
                let (client, mut events) =
                    rumqttc::AsyncClient::new(options_v311(settings, endpoint), capacity);
                let mut network = events.network_options();
                network.set_connection_timeout(settings.connect_timeout.as_secs().max(1));
                events.set_network_options(network);
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {}
                    Ok(other) => {
                        return Err(Lost {
                            why: format!("expected CONNACK, got {other:?}"),
                            by_broker: false,
                            maybe_not_v5: false,
                        })
                    }
                    Err(e) => return Err(lost_v311(&e, false)),
                }
                for filter in &settings.subscriptions {
                    // Queued in the client; written once the pump polls.
                    let _ = client.try_subscribe(filter, rumqttc::QoS::AtLeastOnce);
                }
                let connection = Connection {
                    client: Client::V311(client),
                    events: EventPump::v311(events),
                    version,
                };
                Ok((connection, Limits::default()))
            }
            Version::V5 => {
                let (client, mut events) =
                    rumqttc::v5::AsyncClient::new(options_v5(settings, endpoint), capacity);
                let limits = match events.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(
                        rumqttc::v5::mqttbytes::v5::Packet::ConnAck(ack),
                    )) => {
                        let properties = ack.properties.as_ref();
                        Limits {
                            receive_max: properties.and_then(|p| p.receive_max),
                            max_packet_size: properties.and_then(|p| p.max_packet_size),
                        }
                    }
                    Ok(other) => {
                        return Err(Lost {
                            why: format!("expected CONNACK, got {other:?}"),
                            by_broker: false,
                            maybe_not_v5: true,
                        })
                    }
                    Err(e) => return Err(lost_v5(&e, false)),
                };
                for filter in &settings.subscriptions {
                    let _ = client.try_subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
                }
                let connection = Connection {
                    client: Client::V5(client),
                    events: EventPump::v5(events),
                    version,
                };
                Ok((connection, limits))
            }
        }
    }

    /// Hands a publish to the client; false when its event loop is gone.
    pub fn publish(&self, message: Outbound) -> bool {
        match &self.client {
            Client::V311(c) => {
                let qos = match message.qos1 {
                    true => rumqttc::QoS::AtLeastOnce,
                    false => rumqttc::QoS::AtMostOnce,
                };
                c.try_publish(message.topic, qos, message.retain, message.payload)
                    .is_ok()
            }
            Client::V5(c) => {
                let qos = match message.qos1 {
                    true => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                };
                match message.properties {
                    Some(p) => c
                        .try_publish_with_properties(
                            message.topic,
                            qos,
                            message.retain,
                            message.payload,
                            p,
                        )
                        .is_ok(),
                    None => c
                        .try_publish(message.topic, qos, message.retain, message.payload)
                        .is_ok(),
                }
            }
        }
    }

    /// The PUBACK of an incoming QoS 1 PUBLISH (manual acks: sent once
    /// the command is journaled); false when the event loop is gone.
    pub fn ack(&self, pkid: u16) -> bool {
        match &self.client {
            Client::V311(c) => {
                let mut publish =
                    rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::<u8>::new());
                publish.pkid = pkid;
                c.try_ack(&publish).is_ok()
            }
            Client::V5(c) => {
                let mut publish = rumqttc::v5::mqttbytes::v5::Publish::new(
                    "",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    Vec::<u8>::new(),
                    None,
                );
                publish.pkid = pkid;
                c.try_ack(&publish).is_ok()
            }
        }
    }

    pub fn disconnect(&self) {
        let _ = match &self.client {
            Client::V311(c) => c.try_disconnect().map_err(drop),
            Client::V5(c) => c.try_disconnect().map_err(drop),
        };
    }
}

/// The transport of `endpoint`. The uplink checks before connecting that a
/// TLS broker has a TLS configuration (the daemon builds one whenever the
/// config names a TLS broker); without one this would fall back to TCP, so
/// the check matters.
fn transport(settings: &Settings, endpoint: &Endpoint) -> Transport {
    let tls = |config: &Arc<rustls::ClientConfig>| TlsConfiguration::Rustls(config.clone());
    match (endpoint.scheme, &settings.tls) {
        (Scheme::Mqtt, _) => Transport::Tcp,
        (Scheme::Ws, _) => Transport::Ws,
        (Scheme::Mqtts, Some(config)) => Transport::Tls(tls(config)),
        (Scheme::Wss, Some(config)) => Transport::Wss(tls(config)),
        (Scheme::Mqtts | Scheme::Wss, None) => Transport::Tcp,
    }
}

/// rumqttc takes a WebSocket broker as its whole URL in place of the host.
fn broker_address(endpoint: &Endpoint) -> String {
    match endpoint.websocket() {
        true => endpoint.url(),
        false => endpoint.host.clone(),
    }
}

fn proxy(settings: &Settings) -> Option<rumqttc::Proxy> {
    let p = settings.proxy.as_ref()?;
    Some(rumqttc::Proxy {
        ty: rumqttc::ProxyType::Http,
        auth: match &p.credentials {
            Some((username, password)) => rumqttc::ProxyAuth::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            None => rumqttc::ProxyAuth::None,
        },
        addr: p.host.clone(),
        port: p.port,
    })
}

fn options_v311(s: &Settings, endpoint: &Endpoint) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(&s.client_id, broker_address(endpoint), endpoint.port);
    o.set_keep_alive(s.keep_alive.max(Duration::from_secs(1)))
        // With commands, a persistent session: the broker keeps the
        // subscription and the commands published while we are away.
        .set_clean_session(s.subscriptions.is_empty())
        .set_manual_acks(!s.subscriptions.is_empty())
        .set_inflight(s.inflight.max(1))
        .set_request_channel_capacity(usize::from(s.inflight.max(1)) + 8)
        // Outgoing limit: ours, checked before publishing; incoming
        // packets are acks, and commands when there are command tables.
        .set_max_packet_size(incoming_limit(s), s.max_packet_size.saturating_add(1024))
        .set_transport(transport(s, endpoint));
    if let Some(p) = proxy(s) {
        o.set_proxy(p);
    }
    if let Some((user, password)) = &s.credentials {
        o.set_credentials(user, password);
    }
    if let Some(topic) = &s.status_topic {
        o.set_last_will(rumqttc::LastWill::new(
            topic,
            "offline",
            rumqttc::QoS::AtLeastOnce,
            true,
        ));
    }
    o
}

fn options_v5(s: &Settings, endpoint: &Endpoint) -> rumqttc::v5::MqttOptions {
    use rumqttc::v5::mqttbytes::{v5::LastWill, QoS};
    let mut o =
        rumqttc::v5::MqttOptions::new(&s.client_id, broker_address(endpoint), endpoint.port);
    o.set_keep_alive(s.keep_alive.max(Duration::from_secs(1)))
        .set_clean_start(s.subscriptions.is_empty())
        .set_manual_acks(!s.subscriptions.is_empty())
        // rumqttc keeps a slot per packet id up to this limit, allocated
        // up front: its default (65,535) cost 14 MB of RSS at rest.
        .set_outgoing_inflight_upper_limit(s.inflight.max(1))
        .set_request_channel_capacity(usize::from(s.inflight.max(1)) + 8)
        .set_connection_timeout(s.connect_timeout.as_secs().max(1))
        // What we accept: acks, and commands when there are tables.
        .set_max_packet_size(Some(incoming_limit(s) as u32))
        .set_transport(transport(s, endpoint));
    if !s.subscriptions.is_empty() {
        // The session (subscription, commands published meanwhile)
        // outlives a disconnection by a week.
        o.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
    }
    if let Some(p) = proxy(s) {
        o.set_proxy(p);
    }
    if let Some((user, password)) = &s.credentials {
        o.set_credentials(user, password);
    }
    if let Some(topic) = &s.status_topic {
        o.set_last_will(LastWill::new(
            topic,
            "offline",
            QoS::AtLeastOnce,
            true,
            None,
        ));
    }
    o
}

/// How long the broker keeps our MQTT 5 session (and the commands
/// published for us) while we are disconnected.
const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// The largest packet we accept: acks only, or commands too.
fn incoming_limit(s: &Settings) -> usize {
    match s.subscriptions.is_empty() {
        true => 16 * 1024,
        false => 128 * 1024,
    }
}

/// Polls a connected event loop in a task of its own and hands its events
/// over a channel, already in the session's terms.
pub struct EventPump {
    events: mpsc::Receiver<Result<Observed, Lost>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventPump {
    /// Events buffered between the pump and the session.
    const CAPACITY: usize = 64;

    fn v311(mut event_loop: rumqttc::EventLoop) -> EventPump {
        let (tx, events) = mpsc::channel(Self::CAPACITY);
        let task = tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await.map_err(|e| lost_v311(&e, true));
                let failed = event.is_err();
                let observed = event.map(|e| match e {
                    rumqttc::Event::Outgoing(Outgoing::Publish(pkid)) => Observed::Written(pkid),
                    rumqttc::Event::Outgoing(Outgoing::Disconnect) => Observed::DisconnectWritten,
                    rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack)) => Observed::Acked {
                        pkid: ack.pkid,
                        reason: 0,
                    },
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack)) => {
                        Observed::Subscribed {
                            granted: ack
                                .return_codes
                                .iter()
                                .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                        }
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                        Observed::Incoming(Inbound {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            pkid: p.pkid,
                            qos1: p.qos != rumqttc::QoS::AtMostOnce,
                            dup: p.dup,
                            expiry_s: None,
                            response_topic: None,
                            correlation: None,
                        })
                    }
                    _ => Observed::Other,
                });
                if tx.send(observed).await.is_err() || failed {
                    return;
                }
            }
        });
        EventPump { events, task }
    }

    fn v5(mut event_loop: rumqttc::v5::EventLoop) -> EventPump {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let (tx, events) = mpsc::channel(Self::CAPACITY);
        let task = tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await.map_err(|e| lost_v5(&e, true));
                let failed = event.is_err();
                let observed = event.map(|e| match e {
                    rumqttc::v5::Event::Outgoing(Outgoing::Publish(pkid)) => {
                        Observed::Written(pkid)
                    }
                    rumqttc::v5::Event::Outgoing(Outgoing::Disconnect) => {
                        Observed::DisconnectWritten
                    }
                    rumqttc::v5::Event::Incoming(Packet::PubAck(ack)) => Observed::Acked {
                        pkid: ack.pkid,
                        reason: puback_code(&ack.reason),
                    },
                    rumqttc::v5::Event::Incoming(Packet::SubAck(ack)) => Observed::Subscribed {
                        granted: ack.return_codes.iter().all(|c| {
                            matches!(
                                c,
                                rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                            )
                        }),
                    },
                    rumqttc::v5::Event::Incoming(Packet::Publish(p)) => {
                        let properties = p.properties.unwrap_or_default();
                        Observed::Incoming(Inbound {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            pkid: p.pkid,
                            qos1: p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                            dup: p.dup,
                            expiry_s: properties.message_expiry_interval,
                            response_topic: properties.response_topic,
                            correlation: properties.correlation_data.map(|b| b.to_vec()),
                        })
                    }
                    _ => Observed::Other,
                });
                if tx.send(observed).await.is_err() || failed {
                    return;
                }
            }
        });
        EventPump { events, task }
    }

    /// The next event; an error ends the connection.
    pub async fn next(&mut self) -> Result<Observed, Lost> {
        match self.events.recv().await {
            Some(event) => event,
            // The pump only stops after sending its error, so this is a
            // pump that panicked.
            None => Err(Lost {
                why: "the MQTT event loop stopped".into(),
                by_broker: false,
                maybe_not_v5: false,
            }),
        }
    }

    /// Waits until the DISCONNECT is written, or the end.
    pub async fn until_disconnect_written(&mut self) {
        while let Some(Ok(event)) = self.events.recv().await {
            if event == Observed::DisconnectWritten {
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

/// The wire value of a PUBACK reason rumqttc decoded.
fn puback_code(reason: &rumqttc::v5::mqttbytes::v5::PubAckReason) -> u8 {
    use rumqttc::v5::mqttbytes::v5::PubAckReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

fn io_by_broker(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
    )
}

/// The I/O error under a 3.1.1 connection error, however rumqttc wrapped
/// it: a read error surfaces through its codec as a decoding error.
fn io_v311(error: &rumqttc::ConnectionError) -> Option<&std::io::Error> {
    use rumqttc::{ConnectionError as E, StateError as S};
    match error {
        E::Io(e)
        | E::MqttState(S::Io(e))
        | E::MqttState(S::Deserialization(rumqttc::mqttbytes::Error::Io(e))) => Some(e),
        _ => None,
    }
}

/// `connected`: the CONNACK came (a close now is the broker's doing).
pub fn lost_v311(error: &rumqttc::ConnectionError, connected: bool) -> Lost {
    use rumqttc::{ConnectionError as E, StateError as S};
    let by_broker = connected
        && (matches!(error, E::MqttState(S::ConnectionAborted))
            || io_v311(error).is_some_and(io_by_broker));
    Lost {
        why: explain(
            error.to_string(),
            io_v311(error),
            matches!(error, E::Tls(_)),
            refused_v311(error),
        ),
        by_broker,
        maybe_not_v5: false,
    }
}

fn refused_v311(error: &rumqttc::ConnectionError) -> Option<String> {
    match error {
        rumqttc::ConnectionError::ConnectionRefused(code) => Some(format!("{code:?}")),
        _ => None,
    }
}

fn io_v5(error: &rumqttc::v5::ConnectionError) -> Option<&std::io::Error> {
    use rumqttc::v5::{ConnectionError as E, StateError as S};
    match error {
        E::Io(e)
        | E::MqttState(S::Io(e))
        | E::MqttState(S::Deserialization(rumqttc::v5::mqttbytes::Error::Io(e))) => Some(e),
        _ => None,
    }
}

pub fn lost_v5(error: &rumqttc::v5::ConnectionError, connected: bool) -> Lost {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
    use rumqttc::v5::{ConnectionError as E, StateError as S};
    let by_broker = connected && io_v5(error).is_some_and(io_by_broker);
    // Before a CONNACK, a 3.1.1-only broker refuses version 5 in 3.1.1's
    // terms (a CONNACK rumqttc cannot decode as 5), or simply closes.
    let tls_failure = io_v5(error)
        .and_then(|e| e.get_ref())
        .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some());
    let maybe_not_v5 = !connected
        && !tls_failure
        && match error {
            E::ConnectionRefused(C::RefusedProtocolVersion | C::UnsupportedProtocolVersion) => true,
            E::MqttState(S::Deserialization(rumqttc::v5::mqttbytes::Error::Io(e))) => {
                io_by_broker(e)
            }
            E::MqttState(S::Deserialization(_)) | E::NotConnAck(_) => true,
            // A 3.1.1 CONNACK is two bytes shorter than any MQTT 5 one:
            // rumqttc's decoder waits for the properties length that never
            // comes, and the broker's close then surfaces as an abort
            // (nats-server 2.9 answers `20 02 00 01` and closes).
            E::MqttState(S::ConnectionAborted) => true,
            other => io_v5(other).is_some_and(io_by_broker),
        };
    let refused = match error {
        E::ConnectionRefused(code) => Some(format!("{code:?}")),
        _ => None,
    };
    Lost {
        why: explain(
            error.to_string(),
            io_v5(error),
            matches!(error, E::Tls(_)),
            refused,
        ),
        by_broker,
        maybe_not_v5,
    }
}

/// A connection error in words an operator can act on.
fn explain(
    text: String,
    io: Option<&std::io::Error>,
    tls: bool,
    refused: Option<String>,
) -> String {
    use rustls::AlertDescription as Alert;
    let alert = io
        .and_then(|e| e.get_ref())
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .and_then(|e| match e {
            rustls::Error::AlertReceived(alert) => Some(*alert),
            _ => None,
        });
    match alert {
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
    if tls {
        return format!("TLS handshake failed: {text} (check mqtt.ca_file, client_cert, client_key and the broker's host name)");
    }
    if let Some(code) = refused {
        return format!("the broker refused the connection: {code} (check client_id, username and password_file)");
    }
    if let Some(code) = proxy_refusal(&text) {
        return match code {
            401 | 407 => format!("the HTTP proxy wants other credentials (HTTP {code}): check mqtt.proxy_credentials_file"),
            _ => format!("the HTTP proxy refused to connect us to the broker (HTTP {code}): check that it allows CONNECT to the broker's host and port"),
        };
    }
    if text.contains("Timeout") || text.contains("timed out") {
        return "no CONNACK within the connect timeout (broker unreachable or not answering)"
            .into();
    }
    text
}

/// The HTTP status with which a proxy answered our CONNECT, when it was not
/// 200. rumqttc does not export its proxy error type, so the code is read
/// from the message it ends with ("... not equal 200: 407.").
fn proxy_refusal(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("The HTTP code is not equal 200: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_client_certificate_is_explained_with_the_keys_to_set() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        let error = rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::Io(io),
        ));
        assert!(lost_v311(&error, true)
            .why
            .contains("set mqtt.client_cert and mqtt.client_key"));
    }

    #[test]
    fn only_a_broker_side_close_after_connack_blames_a_message() {
        let reset = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(lost_v311(&rumqttc::ConnectionError::Io(reset()), true).by_broker);
        assert!(!lost_v311(&rumqttc::ConnectionError::Io(reset()), false).by_broker);
        assert!(
            lost_v311(
                &rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted),
                true
            )
            .by_broker
        );
        assert!(
            lost_v311(
                &rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                    rumqttc::mqttbytes::Error::Io(reset())
                )),
                true
            )
            .by_broker
        );
        assert!(!lost_v311(&rumqttc::ConnectionError::NetworkTimeout, true).by_broker);
        assert!(
            !lost_v311(
                &rumqttc::ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp),
                true
            )
            .by_broker
        );
    }

    #[test]
    fn a_v5_connect_refused_or_cut_off_before_connack_may_be_a_311_broker() {
        use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
        use rumqttc::v5::ConnectionError as E;
        assert!(lost_v5(&E::ConnectionRefused(C::UnsupportedProtocolVersion), false).maybe_not_v5);
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof");
        assert!(lost_v5(&E::Io(eof), false).maybe_not_v5);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(
            !lost_v5(&E::Io(refused), false).maybe_not_v5,
            "nobody there"
        );
        assert!(!lost_v5(&E::ConnectionRefused(C::NotAuthorized), false).maybe_not_v5);
    }

    #[test]
    fn a_311_connack_cut_short_for_the_v5_decoder_may_be_a_311_broker() {
        use rumqttc::v5::{ConnectionError as E, StateError as S};
        // What rumqttc reports when a broker sends the 3.1.1 CONNACK
        // `20 02 00 01` (unacceptable protocol version) and closes.
        let aborted = || E::MqttState(S::ConnectionAborted);
        assert!(lost_v5(&aborted(), false).maybe_not_v5);
        assert!(
            !lost_v5(&aborted(), true).maybe_not_v5,
            "after a CONNACK the version is known"
        );
    }

    #[test]
    fn a_proxy_refusing_the_connect_is_explained_with_the_key_to_check() {
        // As rumqttc 0.25 words it (seen against tinyproxy, which answers
        // wrong credentials with 401).
        let refused = |code: u16| {
            explain(
                format!("Proxy Connect: Proxy connect: The HTTP code is not equal 200: {code}."),
                None,
                false,
                None,
            )
        };
        for code in [401, 407] {
            let why = refused(code);
            assert!(why.contains("mqtt.proxy_credentials_file"), "{why}");
            assert!(why.contains(&format!("HTTP {code}")), "{why}");
        }
        let forbidden = refused(403);
        assert!(
            forbidden.contains("allows CONNECT") && forbidden.contains("HTTP 403"),
            "{forbidden}"
        );
    }

    #[test]
    fn a_websocket_broker_is_given_to_rumqttc_as_its_url() {
        let endpoint = Endpoint {
            scheme: Scheme::Wss,
            host: "b.example.com".into(),
            port: 443,
            path: "/mqtt".into(),
        };
        assert_eq!(broker_address(&endpoint), "wss://b.example.com:443/mqtt");
    }
}
