//! The cloud application of the commands phase: publishes commands (QoS 1)
//! for the load generator's devices at a fixed rate, each carrying its
//! publish time (µs since the epoch, decimal) so the device that receives
//! it can tell the delivery latency.

use crate::load::unix_us;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Commander {
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Commander {
    /// Starts publishing `rate` commands per second to
    /// `cmd/<gateway>/d<i>/set` for devices 0..`devices`, round robin.
    pub fn start(port: u16, gateway: &str, devices: usize, rate: f64) -> Commander {
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let (s, p, gateway) = (stop.clone(), published.clone(), gateway.to_string());
        let task = tokio::spawn(async move {
            let mut options = MqttOptions::new("bench-commander", "127.0.0.1", port);
            options
                .set_keep_alive(Duration::from_secs(30))
                .set_inflight(256);
            let (client, mut events) = AsyncClient::new(options, 1024);
            tokio::spawn(async move { while events.poll().await.is_ok() {} });
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3)));
            let mut n = 0usize;
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let topic = format!("cmd/{gateway}/d{}/set", n % devices.max(1));
                let payload = unix_us().to_string();
                if client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_ok()
                {
                    p.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            let _ = client.disconnect().await;
        });
        Commander {
            stop,
            published,
            task,
        }
    }

    /// Stops and returns how many commands were handed to the broker.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.published.load(Ordering::Relaxed)
    }
}
