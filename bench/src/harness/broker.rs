//! A mosquitto of the driver's own: free port, temp dir, `user root` (as
//! root, mosquitto would otherwise drop to its own user and be unable to
//! write the temp dir), QoS 1 queues without limits so the subscriber never
//! loses a message to a queue cap.

use super::{sigterm, wait_or_kill};
use anyhow::Context;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts mosquitto on `port` with its files in `dir`. With
    /// `persistence`, sessions and queued messages survive a restart (the
    /// drain phase uses that so its subscriber is subscribed before the
    /// daemon can publish); the ceilings run with persistence off.
    pub fn start(port: u16, dir: &Path, persistence: bool) -> anyhow::Result<Broker> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        let config = format!(
            "# written by the coap2mqtt bench driver\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence {persistence}\n\
             persistence_location {d}/\n\
             autosave_interval 0\n\
             user root\n\
             max_queued_messages 0\n\
             max_inflight_messages 0\n\
             log_dest file {d}/mosquitto.log\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n"
        );
        std::fs::write(dir.join("mosquitto.conf"), config)?;
        let mut broker = Broker {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        broker.launch()?;
        Ok(broker)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let stderr = std::fs::File::create(self.dir.join("mosquitto.stderr"))?;
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting mosquitto (apt-get install mosquitto)")?;
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(15);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < until {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                anyhow::bail!(
                    "mosquitto exited with {status}: {}",
                    std::fs::read_to_string(self.dir.join("mosquitto.stderr")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("mosquitto did not accept TCP on {addr} within 15 s")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            wait_or_kill(&mut child, Duration::from_secs(10));
        }
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mosquitto() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}
