//! Per-process figures from /proc: CPU time and bytes written to disk, for
//! the daemon and the broker alike, so that the two can be compared in the
//! same run.

/// User + system CPU time of a process so far, in microseconds.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields count from after it.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13
    // after the command name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks())
}

/// Bytes a process caused to be written to storage so far (`write_bytes`
/// of /proc/PID/io: what reached the block layer, not what `write` copied
/// into the page cache).
pub fn write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system) of this process's waited-for children so far,
/// in µs (getrusage, not /proc: a child's /proc entry is gone once it is
/// waited for). The bench reads it around each run of the load generator.
pub fn children_cpu_us() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// Clock ticks per second of /proc/PID/stat's times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// CPU and disk figures of one process over an interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_us: u64,
    pub write_bytes: u64,
}

/// A reading to subtract from a later one.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pid: u32,
    cpu_us: u64,
    write_bytes: u64,
}

impl Mark {
    pub fn now(pid: u32) -> Mark {
        Mark {
            pid,
            cpu_us: cpu_us(pid).unwrap_or(0),
            write_bytes: write_bytes(pid).unwrap_or(0),
        }
    }

    pub fn since(&self) -> Usage {
        Usage {
            cpu_us: cpu_us(self.pid).unwrap_or(0).saturating_sub(self.cpu_us),
            write_bytes: write_bytes(self.pid)
                .unwrap_or(0)
                .saturating_sub(self.write_bytes),
        }
    }
}
