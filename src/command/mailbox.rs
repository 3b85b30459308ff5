//! The mailboxes: one FIFO of commands per device, bounded per device and
//! in all, with expiry. Sans-IO: commands and the time in, decisions out;
//! the service journals what this decides.
//!
//! A device is handed its oldest command until it reports on it (or it
//! expires): one command in flight per device, in the order they were
//! published. Handing it again is how a lost answer is repaired (the device
//! asks again), so a device may see a command more than once, always with
//! the same id: at least once, never reordered.

use super::Command;
use std::collections::{HashMap, VecDeque};

/// Caps (`[commands]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_per_device: usize,
    pub max_total: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_per_device: 64,
            max_total: 10_000,
        }
    }
}

/// Why a command was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    DeviceFull(usize),
    AllFull(usize),
}

impl Rejection {
    pub fn reason(&self) -> String {
        match self {
            Rejection::DeviceFull(n) => {
                format!("the device's mailbox is full ({n} commands, commands.max_per_device)")
            }
            Rejection::AllFull(n) => {
                format!("the gateway holds {n} commands already (commands.max_total)")
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Mailbox {
    devices: HashMap<String, VecDeque<Command>>,
    total: usize,
    limits: Limits,
}

impl Mailbox {
    pub fn new(limits: Limits) -> Mailbox {
        Mailbox {
            devices: HashMap::new(),
            total: 0,
            limits,
        }
    }

    /// Checks a new command against the caps; `offer` it once journaled.
    pub fn admits(&self, device: &str) -> Result<(), Rejection> {
        if self.total >= self.limits.max_total {
            return Err(Rejection::AllFull(self.total));
        }
        let queued = self.devices.get(device).map_or(0, VecDeque::len);
        if queued >= self.limits.max_per_device {
            return Err(Rejection::DeviceFull(queued));
        }
        Ok(())
    }

    /// Takes a command (journaled already, or replayed from the journal:
    /// then the caps are not applied again).
    pub fn offer(&mut self, command: Command) {
        self.total += 1;
        self.devices
            .entry(command.device.clone())
            .or_default()
            .push_back(command);
    }

    /// The device's oldest command still valid at `now_ms`.
    pub fn next_for(&self, device: &str, now_ms: u64) -> Option<&Command> {
        self.devices
            .get(device)?
            .iter()
            .find(|c| c.expires_ms > now_ms)
    }

    pub fn get(&self, id: u64) -> Option<&Command> {
        self.devices.values().flatten().find(|c| c.id == id)
    }

    /// Takes a command out (it is done, failed or rejected).
    pub fn remove(&mut self, id: u64) -> Option<Command> {
        let (device, index) = self.devices.iter().find_map(|(device, queue)| {
            queue
                .iter()
                .position(|c| c.id == id)
                .map(|i| (device.clone(), i))
        })?;
        let queue = self.devices.get_mut(&device)?;
        let command = queue.remove(index)?;
        if queue.is_empty() {
            self.devices.remove(&device);
        }
        self.total -= 1;
        Some(command)
    }

    /// Takes out every command whose time is up at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Command> {
        let mut expired = Vec::new();
        self.devices.retain(|_, queue| {
            queue.retain(|c| {
                let keep = c.expires_ms > now_ms;
                if !keep {
                    expired.push(c.clone());
                }
                keep
            });
            !queue.is_empty()
        });
        self.total -= expired.len();
        expired.sort_by_key(|c| c.id);
        expired
    }

    /// When the next command expires, for the service's timer.
    pub fn next_expiry(&self) -> Option<u64> {
        self.devices.values().flatten().map(|c| c.expires_ms).min()
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Pending commands per device.
    pub fn pending(&self, device: &str) -> usize {
        self.devices.get(device).map_or(0, VecDeque::len)
    }

    /// The oldest pending command's creation time.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.devices.values().flatten().map(|c| c.created_ms).min()
    }

    /// Every pending command, by device (for compaction and status).
    pub fn iter(&self) -> impl Iterator<Item = &Command> {
        self.devices.values().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Delivery;
    use crate::route::Method;

    fn command(id: u64, device: &str, expires_ms: u64) -> Command {
        Command {
            id,
            device: device.into(),
            resource: "r".into(),
            method: Method::Put,
            payload: vec![],
            created_ms: id,
            expires_ms,
            delivery: Delivery::Poll,
            result_topic: None,
            correlation: None,
            identity_required: false,
            awake_s: 30,
        }
    }

    #[test]
    fn a_device_gets_its_oldest_command_until_it_reports() {
        let mut m = Mailbox::new(Limits::default());
        m.offer(command(1, "a", 100));
        m.offer(command(2, "b", 100));
        m.offer(command(3, "a", 100));
        assert_eq!(m.next_for("a", 0).map(|c| c.id), Some(1));
        assert_eq!(
            m.next_for("a", 0).map(|c| c.id),
            Some(1),
            "again, not the next"
        );
        assert_eq!(m.remove(1).map(|c| c.id), Some(1));
        assert_eq!(m.next_for("a", 0).map(|c| c.id), Some(3));
        assert_eq!(m.next_for("c", 0), None);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn caps_per_device_and_in_all() {
        let mut m = Mailbox::new(Limits {
            max_per_device: 2,
            max_total: 3,
        });
        m.offer(command(1, "a", 100));
        m.offer(command(2, "a", 100));
        assert_eq!(m.admits("a"), Err(Rejection::DeviceFull(2)));
        assert_eq!(m.admits("b"), Ok(()));
        m.offer(command(3, "b", 100));
        assert_eq!(m.admits("c"), Err(Rejection::AllFull(3)));
    }

    #[test]
    fn expired_commands_leave_in_id_order_and_are_not_handed_out() {
        let mut m = Mailbox::new(Limits::default());
        m.offer(command(1, "a", 50));
        m.offer(command(2, "b", 40));
        m.offer(command(3, "a", 200));
        assert_eq!(m.next_for("a", 60).map(|c| c.id), Some(3), "1 has expired");
        assert_eq!(m.next_expiry(), Some(40));
        let gone: Vec<u64> = m.expire(60).iter().map(|c| c.id).collect();
        assert_eq!(gone, [1, 2]);
        assert_eq!((m.len(), m.pending("a"), m.pending("b")), (1, 1, 0));
    }
}
