//! The soak's figures and its one machine-readable line, `SOAK {json}`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::faults::Fault;

/// What happened to one kind of fault.
#[derive(Debug, Default, Clone)]
pub struct FaultRecord {
    pub injected: u64,
    /// Faults after which a probe message did not get through in time.
    pub unrecovered: u64,
    /// The longest time from the end of a fault until a message sent after
    /// it was delivered.
    pub longest_recovery: Duration,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub seconds: u64,
    pub devices: usize,
    pub acked: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unavailable_503: u64,
    pub unanswered: u64,
    pub largest_queue: u64,
    pub faults: BTreeMap<Fault, FaultRecord>,
    /// Why a fault kind could not be injected here, if one could not.
    pub skipped: Vec<String>,
}

impl Summary {
    pub fn record(&mut self, fault: Fault, recovery: Option<Duration>) {
        let r = self.faults.entry(fault).or_default();
        r.injected += 1;
        match recovery {
            Some(d) => r.longest_recovery = r.longest_recovery.max(d),
            None => r.unrecovered += 1,
        }
    }

    pub fn unrecovered(&self) -> u64 {
        self.faults.values().map(|r| r.unrecovered).sum()
    }

    /// `SOAK {...}`: one line, keys fixed, for scripts and docs.
    pub fn line(&self) -> String {
        let mut faults = String::new();
        for (i, (fault, r)) in self.faults.iter().enumerate() {
            if i > 0 {
                faults.push(',');
            }
            let _ = write!(
                faults,
                "\"{}\":{{\"injected\":{},\"unrecovered\":{},\"longest_recovery_s\":{:.2}}}",
                fault.name(),
                r.injected,
                r.unrecovered,
                r.longest_recovery.as_secs_f64()
            );
        }
        let skipped: Vec<String> = self.skipped.iter().map(|s| format!("{s:?}")).collect();
        format!(
            "SOAK {{\"seconds\":{},\"devices\":{},\"acked\":{},\"delivered\":{},\"lost\":{},\
             \"duplicates\":{},\"unavailable_503\":{},\"unanswered\":{},\"largest_queue\":{},\
             \"faults\":{{{faults}}},\"skipped\":[{}]}}",
            self.seconds,
            self.devices,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicates,
            self.unavailable_503,
            self.unanswered,
            self.largest_queue,
            skipped.join(",")
        )
    }
}
