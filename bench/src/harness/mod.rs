//! What the bench driver runs besides the load generator: mosquitto, the
//! daemon, the checking subscriber, the two ceilings (UDP echo, bare MQTT
//! publisher), and /proc readings (RSS, disk usage, machine).

pub mod broker;
pub mod ceiling;
pub mod commander;
pub mod daemon;
pub mod machine;
pub mod procfs;
pub mod subscriber;

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// SIGTERM through kill(1), so the driver needs no libc bindings.
pub fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// Waits for `child` to exit; SIGKILL after `patience`. True if it exited
/// by itself.
pub fn wait_or_kill(child: &mut Child, patience: Duration) -> bool {
    let until = Instant::now() + patience;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}
