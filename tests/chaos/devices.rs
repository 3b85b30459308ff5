//! Steady CON load from simulated devices, each recording exactly which of
//! its messages were answered 2.04: those are the ones the daemon promised
//! to deliver.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::support::coap::{CoapClient, Code, Transmission};

/// Short CoAP timers, so that a device waiting on a dead daemon gives up in
/// about two seconds and sends its next message (a real device would retry
/// the same reading; a new one is easier to account for).
pub fn impatient() -> Transmission {
    Transmission {
        ack_timeout: Duration::from_millis(300),
        ack_random_factor: 1.5,
        max_retransmit: 2,
        separate_response_timeout: Duration::from_secs(5),
    }
}

/// What the devices saw, shared with the fault loop while they run.
#[derive(Default)]
pub struct Tally {
    pub acked: AtomicU64,
    pub unavailable: AtomicU64,
    pub other_answers: AtomicU64,
    pub unanswered: AtomicU64,
}

/// The payloads each device had acknowledged, once it stopped.
pub struct Acked {
    pub device: usize,
    pub numbers: Vec<u64>,
}

pub struct Fleet {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Acked>>,
    pub tally: Arc<Tally>,
}

/// The payload device `device` sends as its `n`th message.
pub fn payload(device: usize, n: u64) -> String {
    format!("d{device}-{n}")
}

impl Fleet {
    /// `devices` threads, each posting to `sensors/d<i>` every `pause`.
    pub fn start(coap: SocketAddr, devices: usize, pause: Duration) -> Fleet {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = (0..devices)
            .map(|device| {
                let stop = stop.clone();
                let tally = tally.clone();
                std::thread::spawn(move || {
                    let mut client = CoapClient::new(coap).with_transmission(impatient());
                    let path = ["sensors".to_string(), format!("d{device}")];
                    let mut numbers = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = client.con(&path, payload(device, n).as_bytes());
                        match outcome.code() {
                            Some(Code::CHANGED) => {
                                numbers.push(n);
                                tally.acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(c) if c == Code::new(5, 3) => {
                                tally.unavailable.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(_) => {
                                tally.other_answers.fetch_add(1, Ordering::Relaxed);
                            }
                            None => {
                                tally.unanswered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        n += 1;
                        std::thread::sleep(pause);
                    }
                    Acked { device, numbers }
                })
            })
            .collect();
        Fleet {
            stop,
            threads,
            tally,
        }
    }

    pub fn stop(mut self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| t.join().expect("device thread"))
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
