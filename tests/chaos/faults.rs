//! The faults the soak injects, and the rig they are injected into: the
//! real daemon with its store on a small tmpfs, a fault-injecting proxy on
//! its uplink, and a mosquitto with persistence.

use std::time::{Duration, Instant};

use crate::support::broker::Broker;
use crate::support::daemon::Daemon;
use crate::support::disk::SmallDisk;
use crate::support::proxy::{FaultProxy, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 the daemon; start it again on the same store.
    Kill9,
    /// The uplink's connections are closed and new ones refused.
    Refused,
    /// The uplink's bytes vanish; only MQTT keep-alive notices.
    Blackhole,
    /// The uplink comes and goes every few hundred milliseconds.
    Flap,
    /// mosquitto stops (saving its persistence) and starts again.
    BrokerRestart,
    /// The store's filesystem is filled to the last byte, then freed.
    DiskFull,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::Kill9,
        Fault::Refused,
        Fault::Blackhole,
        Fault::Flap,
        Fault::BrokerRestart,
        Fault::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::Refused => "refused",
            Fault::Blackhole => "blackhole",
            Fault::Flap => "flap",
            Fault::BrokerRestart => "broker_restart",
            Fault::DiskFull => "disk_full",
        }
    }
}

/// Everything a fault acts on.
pub struct Rig {
    pub broker: Broker,
    pub proxy: FaultProxy,
    pub daemon: Daemon,
    /// None where no tmpfs can be mounted (not root): no disk faults then.
    pub disk: Option<SmallDisk>,
}

impl Rig {
    /// Which faults this rig can inject.
    pub fn faults(&self) -> Vec<Fault> {
        Fault::ALL
            .into_iter()
            .filter(|f| *f != Fault::DiskFull || self.disk.is_some())
            .collect()
    }

    /// Injects `fault` for `length`, then undoes it; returns when the
    /// fault is over (the daemon, broker and link are back).
    pub fn inject(&mut self, fault: Fault, length: Duration) {
        match fault {
            Fault::Kill9 => {
                self.daemon.kill9();
                std::thread::sleep(length);
                self.daemon.restart();
            }
            Fault::Refused => {
                self.proxy.set_mode(Mode::Refuse);
                std::thread::sleep(length);
                self.proxy.set_mode(Mode::Pass);
            }
            Fault::Blackhole => {
                self.proxy.set_mode(Mode::Blackhole);
                std::thread::sleep(length);
                self.proxy.set_mode(Mode::Pass);
            }
            Fault::Flap => {
                let until = Instant::now() + length;
                while Instant::now() < until {
                    self.proxy.set_mode(Mode::Refuse);
                    std::thread::sleep(Duration::from_millis(300));
                    self.proxy.set_mode(Mode::Pass);
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            Fault::BrokerRestart => {
                self.broker.stop();
                std::thread::sleep(length);
                self.broker.start_again();
            }
            Fault::DiskFull => {
                let disk = self.disk.as_ref().expect("disk faults need the tmpfs");
                let filler = disk.fill();
                std::thread::sleep(length);
                std::fs::remove_file(filler).expect("free the disk");
            }
        }
    }
}
