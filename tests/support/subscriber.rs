//! An MQTT subscriber made of the real `mosquitto_sub`, to observe what the
//! daemon delivered to the broker, plus a `mosquitto_pub` wrapper.
//!
//! Output format: `-F '%q %r %x %t'` (QoS, retain flag, payload in hex,
//! topic). Hex keeps binary payloads and newlines intact, and the topic,
//! which may contain spaces, comes last.
//!
//! Readiness: a subscription that is not active yet silently misses
//! messages. mosquitto_sub subscribes to all its `-t` filters in one
//! SUBSCRIBE packet, so we add a private probe topic next to the test's
//! filter and publish probes until one comes back; from then on the test's
//! filter is active too. Probe messages never appear in [`Subscriber::messages`].
//!
//! Broker restarts (verified with mosquitto 2.0.11, see support_smoke.rs):
//! mosquitto_sub does not exit when the broker goes away; libmosquitto's
//! loop reconnects about once a second and mosquitto_sub subscribes again
//! on every CONNACK. We run it with `-c` (clean session off) and a fixed,
//! unique `-i`, so the broker keeps the session: after a SIGTERM restart
//! (persistence written) the CONNACK says "session present" and QoS 1
//! messages published before mosquitto_sub got back in are queued for it
//! and delivered, not lost. After a SIGKILL of the broker, the session is
//! only as fresh as the last persistence save; messages published before
//! the re-subscription can then be missed.
//!
//! Through a [`FaultProxy`], mosquitto_sub keeps retrying while connections
//! are refused (stderr stays empty). It runs with `-k 5` so that a
//! connection lost in a blackhole is noticed after about 7 s instead of
//! 90 s (the default keep-alive is 60 s).
//!
//! [`FaultProxy`]: super::proxy::FaultProxy
//!
//! QoS 1 means at least once: [`Subscriber::messages`] may hold duplicates.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::certs::Certs;
use super::{kill_and_reap, run_with_timeout, try_wait_until, RunOutcome, WAIT};

/// One message as mosquitto_sub printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 subscribers only: what the publish carried.
    pub v5: Option<V5Properties>,
}

/// The MQTT 5 properties of a received message, as mosquitto_sub prints
/// them (empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V5Properties {
    pub content_type: String,
    pub payload_format: String,
    pub expiry: String,
    pub user: Vec<(String, String)>,
    /// Correlation Data as mosquitto_sub prints it (raw bytes; the tests
    /// use text).
    pub correlation: String,
}

impl V5Properties {
    /// The value of user property `key`.
    pub fn user(&self, key: &str) -> Option<&str> {
        self.user
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Received {
    pub fn payload_str(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// How mosquitto_sub / mosquitto_pub reach the broker.
#[derive(Debug, Clone)]
pub struct MqttEndpoint {
    pub port: u16,
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca_file: PathBuf,
    /// Client certificate and key, if the broker requires one.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

impl MqttEndpoint {
    pub fn plain(port: u16) -> MqttEndpoint {
        MqttEndpoint { port, tls: None }
    }

    /// TLS trusting the test CA, presenting the test client certificate.
    pub fn tls(port: u16, certs: &Certs) -> MqttEndpoint {
        MqttEndpoint {
            port,
            tls: Some(ClientTls {
                ca_file: certs.ca_cert.clone(),
                cert_and_key: Some((certs.client_cert.clone(), certs.client_key.clone())),
            }),
        }
    }

    /// Command-line arguments shared by mosquitto_sub and mosquitto_pub.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-h".to_string(),
            "127.0.0.1".to_string(),
            "-p".to_string(),
            self.port.to_string(),
        ];
        if let Some(tls) = &self.tls {
            args.push("--cafile".into());
            args.push(tls.ca_file.display().to_string());
            if let Some((cert, key)) = &tls.cert_and_key {
                args.push("--cert".into());
                args.push(cert.display().to_string());
                args.push("--key".into());
                args.push(key.display().to_string());
            }
        }
        args
    }
}

/// A running mosquitto_sub collecting messages. Dropping it kills it.
pub struct Subscriber {
    child: Child,
    endpoint: MqttEndpoint,
    client_id: String,
    probe_topic: String,
    probes_sent: u32,
    received: Arc<Mutex<Vec<Received>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

static NEXT_SUBSCRIBER: AtomicU32 = AtomicU32::new(0);

impl Subscriber {
    /// Subscribes to `topic_filter` with QoS 1 on a plain MQTT port and
    /// returns once the subscription is active.
    pub fn start(port: u16, topic_filter: &str) -> Subscriber {
        Subscriber::start_at(MqttEndpoint::plain(port), topic_filter)
    }

    /// Same over TLS with the test CA and client certificate.
    pub fn start_tls(port: u16, topic_filter: &str, certs: &Certs) -> Subscriber {
        Subscriber::start_at(MqttEndpoint::tls(port, certs), topic_filter)
    }

    /// An MQTT 5 subscriber on a plain port: each message comes with the
    /// properties it was published with.
    pub fn start_v5(port: u16, topic_filter: &str) -> Subscriber {
        Subscriber::launch(MqttEndpoint::plain(port), topic_filter, true)
    }

    pub fn start_at(endpoint: MqttEndpoint, topic_filter: &str) -> Subscriber {
        Subscriber::launch(endpoint, topic_filter, false)
    }

    fn launch(endpoint: MqttEndpoint, topic_filter: &str, v5: bool) -> Subscriber {
        let n = NEXT_SUBSCRIBER.fetch_add(1, Ordering::Relaxed);
        let client_id = format!("test-sub-{}-{n}", std::process::id());
        let probe_topic = format!("coap2mqtt-test/probe/{client_id}");
        let (version, format) = match v5 {
            true => (["-V", "mqttv5"], "%q %r %x %t\t%C\t%F\t%E\t%P\t%D"),
            false => (["-V", "mqttv311"], "%q %r %x %t"),
        };
        let mut child = Command::new("mosquitto_sub")
            .args(endpoint.args())
            .args(version)
            .args(["-q", "1", "-k", "5", "-c", "-i", &client_id, "-F", format])
            .args(["-t", topic_filter, "-t", &probe_topic])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto_sub (is mosquitto-clients installed?)");

        let received = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout_pipe = child.stdout.take().expect("mosquitto_sub stdout is piped");
        let stderr_pipe = child.stderr.take().expect("mosquitto_sub stderr is piped");
        let readers = vec![
            spawn_stdout_reader(stdout_pipe, Arc::clone(&received), Arc::clone(&stderr)),
            spawn_stderr_reader(stderr_pipe, Arc::clone(&stderr)),
        ];

        let mut subscriber = Subscriber {
            child,
            endpoint,
            client_id,
            probe_topic,
            probes_sent: 0,
            received,
            stderr,
            readers,
        };
        subscriber.wait_ready();
        subscriber
    }

    /// Publishes probes until one comes back, i.e. the subscription is active.
    /// Call it again after a broker restart to know mosquitto_sub is back.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mosquitto_sub exited with {status}: {}", self.stderr());
            }
            self.probes_sent += 1;
            let probe = format!("probe-{}", self.probes_sent);
            // A failed probe publish (e.g. broker still restarting) just
            // means: try again.
            let _ = publish_at(
                &self.endpoint,
                &self.probe_topic,
                probe.as_bytes(),
                &["-q", "1"],
            );
            let seen = try_wait_until(Duration::from_millis(500), || {
                self.received
                    .lock()
                    .expect("received lock")
                    .iter()
                    .any(|m| m.topic == self.probe_topic)
            });
            if seen.is_ok() {
                self.received
                    .lock()
                    .expect("received lock")
                    .retain(|m| m.topic != self.probe_topic);
                return;
            }
        }
        panic!(
            "mosquitto_sub {} did not receive its probe on port {} within {WAIT:?}; stderr: {}",
            self.client_id,
            self.endpoint.port,
            self.stderr()
        );
    }

    /// Everything received so far except probes, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        self.received
            .lock()
            .expect("received lock")
            .iter()
            .filter(|m| m.topic != self.probe_topic)
            .cloned()
            .collect()
    }

    /// Messages (not probes) received at raw positions `from..`, and the
    /// position to continue from next time. Clones only the new tail, so a
    /// long run can follow a subscriber holding millions of messages.
    pub fn messages_from(&self, from: usize) -> (Vec<Received>, usize) {
        let received = self.received.lock().expect("received lock");
        let tail = received
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter(|m| m.topic != self.probe_topic)
            .cloned()
            .collect();
        (tail, received.len())
    }

    pub fn count(&self) -> usize {
        self.messages().len()
    }

    /// Waits until at least `n` messages (not counting probes) arrived and
    /// returns them all; panics with what did arrive on timeout.
    pub fn wait_for_count(&self, n: usize, timeout: Duration) -> Vec<Received> {
        if try_wait_until(timeout, || self.count() >= n).is_err() {
            let got = self.messages();
            let tail: Vec<String> = got
                .iter()
                .rev()
                .take(5)
                .map(|m| {
                    let payload: String = m.payload_str().chars().take(60).collect();
                    format!("{} {payload:?}", m.topic)
                })
                .collect();
            panic!(
                "subscriber {} got {} of {n} messages within {timeout:?}; last: {tail:?}; stderr: {}",
                self.client_id,
                got.len(),
                self.stderr()
            );
        }
        self.messages()
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        self.received.lock().expect("received lock").clear();
    }

    /// What mosquitto_sub wrote to stderr (connection errors, parse notes).
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        // Killing the process closes its pipes, which ends both readers.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

fn spawn_stdout_reader(
    pipe: impl Read + Send + 'static,
    received: Arc<Mutex<Vec<Received>>>,
    notes: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            match parse_line(&line) {
                Some(message) => received.lock().expect("received lock").push(message),
                None => notes
                    .lock()
                    .expect("stderr lock")
                    .push_str(&format!("unparsed stdout line: {line:?}\n")),
            }
        }
    })
}

fn spawn_stderr_reader(
    pipe: impl Read + Send + 'static,
    stderr: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut text = stderr.lock().expect("stderr lock");
            text.push_str(&line);
            text.push('\n');
        }
    })
}

/// Parses `QOS RETAIN HEXPAYLOAD TOPIC`; the hex is empty for an empty
/// payload. An MQTT 5 subscriber's line goes on, tab-separated, with the
/// Content Type, Payload Format Indicator, Message Expiry Interval and the
/// user properties (`key:value key:value`).
fn parse_line(line: &str) -> Option<Received> {
    let mut fields = line.split('\t');
    let mut parts = fields.next()?.splitn(4, ' ');
    let qos = parts.next()?.parse().ok()?;
    let retain = parts.next()? == "1";
    let payload = decode_hex(parts.next()?)?;
    let topic = parts.next()?.to_string();
    let v5 = fields.next().map(|content_type| V5Properties {
        content_type: content_type.to_string(),
        payload_format: fields.next().unwrap_or("").to_string(),
        expiry: fields.next().unwrap_or("").to_string(),
        user: fields
            .next()
            .unwrap_or("")
            .split(' ')
            .filter_map(|pair| pair.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        correlation: fields.next().unwrap_or("").to_string(),
    });
    Some(Received {
        topic,
        payload,
        qos,
        retain,
        v5,
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Publishes once with mosquitto_pub to a plain port; `extra_args` such as
/// `["-q", "1"]` or `["-r"]`. Killed after 30 s if it hangs.
pub fn mosquitto_pub(port: u16, topic: &str, payload: &[u8], extra_args: &[&str]) -> RunOutcome {
    publish_at(&MqttEndpoint::plain(port), topic, payload, extra_args)
}

/// Publishes once with mosquitto_pub to any endpoint. The payload is passed
/// as an argument, so it must be valid UTF-8 without NUL bytes.
pub fn publish_at(
    endpoint: &MqttEndpoint,
    topic: &str,
    payload: &[u8],
    extra_args: &[&str],
) -> RunOutcome {
    let payload = std::str::from_utf8(payload).expect("mosquitto_pub payloads must be UTF-8 here");
    let mut args = endpoint.args();
    args.extend([
        "-t".to_string(),
        topic.to_string(),
        "-m".to_string(),
        payload.to_string(),
    ]);
    args.extend(extra_args.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_with_timeout("mosquitto_pub", &args, WAIT)
}
