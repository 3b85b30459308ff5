//! The two ceilings every daemon figure is a fraction of.
//!
//! - UDP echo: a CoAP "responder" that does nothing but turn each request
//!   around (ACK 2.04 to a CON, NON 2.04 to a NON, same message id and
//!   token) on one socket served by one thread, the shape of the daemon's
//!   per-socket task. Driven by the same load generator at the same
//!   concurrency, it is the round-trip rate of the loopback, the kernel and
//!   the load generator together: no CoAP server on this machine can
//!   answer faster.
//! - Bare MQTT: one rumqttc QoS 1 publisher with the daemon's in-flight
//!   window into the same mosquitto, counted at the same subscriber: the
//!   ingest rate of broker + subscriber that the daemon's uplink feeds.

use super::subscriber::Subscriber;
use crate::coap::{self, MsgType};
use crate::load::{payload, unix_us};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Echo {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    pub fn start() -> anyhow::Result<Echo> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // A ceiling should not be limited by a default-sized receive
        // buffer (see docs/BENCHMARKS.md): ask for 4 MiB (the kernel caps
        // it at net.core.rmem_max).
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("udp-echo".into())
            .spawn(move || {
                let mut buf = [0u8; 65536];
                let mut out = [0u8; 12];
                while !s.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some(h) = coap::parse_header(&buf[..n]) else {
                        continue;
                    };
                    let tkl = h.token.len();
                    let kind = match h.mtype {
                        MsgType::Con => MsgType::Ack,
                        MsgType::Non => MsgType::Non,
                        _ => continue,
                    };
                    out[0] = 0x40 | ((kind as u8) << 4) | tkl as u8;
                    out[1] = coap::CODE_CHANGED;
                    out[2..4].copy_from_slice(&h.mid.to_be_bytes());
                    out[4..4 + tkl].copy_from_slice(h.token);
                    let _ = socket.send_to(&out[..4 + tkl], peer);
                }
            })?;
        Ok(Echo {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PublisherRun {
    pub published: u64,
    pub acked: u64,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub elapsed_s: f64,
    /// Received within the publishing window / window.
    pub rate_per_s: f64,
    /// CPU (utime + stime) over the run of mosquitto, and of the bench
    /// driver (the publisher and the subscriber are its threads), in µs.
    pub broker_cpu_us: u64,
    pub driver_cpu_us: u64,
}

/// Publishes QoS 1 for `duration` to `ceiling/<run>/d<i>` (i over
/// `topics`), `inflight` at a time, and counts at `subscriber`.
pub async fn bare_publisher(
    port: u16,
    subscriber: &Subscriber,
    run: &str,
    topics: usize,
    payload_size: usize,
    inflight: u16,
    duration: Duration,
) -> anyhow::Result<PublisherRun> {
    let mut options = MqttOptions::new(format!("bench-pub-{run}"), "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(inflight.max(1))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, usize::from(inflight.max(1)) + 8);
    // Wait for CONNACK before the clock starts.
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await? {
            break;
        }
    }
    let started_us = unix_us();
    let started = Instant::now();
    let names: Vec<String> = (0..topics.max(1))
        .map(|i| format!("ceiling/{run}/d{i}"))
        .collect();
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut published = 0u64;
            let mut seqs = vec![0u64; names.len()];
            while started.elapsed() < duration {
                let i = (published as usize) % names.len();
                seqs[i] += 1;
                let body = payload(seqs[i], payload_size);
                if client
                    .publish(names[i].as_str(), QoS::AtLeastOnce, false, body)
                    .await
                    .is_err()
                {
                    break;
                }
                published += 1;
            }
            published
        })
    };
    let mut acked = 0u64;
    let poller = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => return Err::<(), _>(e),
            }
        }
    };
    let mut published = 0;
    tokio::select! {
        r = publisher => { published = r?; }
        e = poller => { e?; }
    }
    // Let the last acks arrive.
    let settle = async {
        while acked < published {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), settle).await;
    let key = format!("ceiling/{run}");
    let got = subscriber
        .wait_for(
            &key,
            published,
            Duration::from_secs(3),
            Duration::from_secs(60),
        )
        .await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;
    let elapsed_s = got.last_unix_us.saturating_sub(started_us) as f64 / 1e6;
    // As for the daemon's end-to-end figure: deliveries within the window.
    let window_end = started_us + duration.as_micros() as u64;
    let in_window = got.delivered_by(window_end);
    Ok(PublisherRun {
        published,
        acked,
        received: got.distinct,
        duplicates: got.duplicates,
        out_of_order: got.out_of_order,
        elapsed_s,
        rate_per_s: in_window as f64 / duration.as_secs_f64().max(1e-9),
        // Filled in by the driver, which knows the processes.
        broker_cpu_us: 0,
        driver_cpu_us: 0,
    })
}
