//! The daemon: wires the parts into tasks and owns start-up and shutdown.
//!
//! Read top to bottom, [`run`] is the whole story: open the queue, start the
//! committer, bind the CoAP sockets (plain UDP and DTLS), start the uplink, tell systemd we are
//! ready, wait for a signal, then stop in the order that loses nothing:
//! stop reading sockets and answer what the store already took, say goodbye
//! to the broker, and let the committer flush one last time.
//!
//! CoAP is served from the first moment whatever the broker does: the uplink
//! connects in the background, and a large queue on disk is read lazily.

use crate::coap::exchange::{Exchange, ExchangeConfig};
use crate::coap::recall::Recall;
use crate::command;
use crate::config::exposure::PlainCoap;
use crate::config::Config;
use crate::metrics::{Metrics, Thresholds};
use crate::reload;
use crate::route::Router;
use crate::store::{self, Limits, Queue, StoreHandle};
use crate::transport::dtls::Dtls;
use crate::transport::server::Server;
use crate::transport::udp::UdpLink;
use crate::transport::{Link, Receipt};
use crate::uplink::{self, tls, Uplink};
use anyhow::Context;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Capacity of the channel into the committer: enough to fill several
/// commit batches while one flushes.
const STORE_CHANNEL: usize = 8192;
/// How long shutdown waits for each stage before moving on.
const STAGE_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(config: Config) -> anyhow::Result<()> {
    let limits = Limits {
        max_messages: config.store.max_messages,
        max_bytes: config.store.max_bytes,
        on_full: config.store.on_full,
    };
    let path = config.store.path.clone();
    let opened = tokio::task::spawn_blocking(move || Queue::open(&path, limits))
        .await
        .context("opening the store")??;
    let queue = opened.queue;
    for note in &opened.notes {
        log::warn!("store {}: {note}", queue.path().display());
    }
    match opened.unavailable {
        Some(e) => log::error!(
            "{e}; serving anyway: devices get 5.03 until the store opens (retrying every second)"
        ),
        None => {
            let (depth, bytes) = queue.depth();
            log::info!(
                "store {}: {depth} messages ({bytes} bytes on disk) waiting for the broker",
                queue.path().display()
            );
        }
    }
    let (store, committer) = store::spawn_committer::<Receipt>(
        queue.clone(),
        config.store.commit_max_batch,
        STORE_CHANNEL,
    )
    .context("starting the store's commit thread")?;
    let pending = store.downgrade();
    let thresholds = Thresholds::for_keep_alive(Duration::from_secs(config.mqtt.keep_alive_s));
    let metrics = Metrics::new(
        queue.clone(),
        move || pending.upgrade().map(|s| s.max_capacity() - s.capacity()),
        thresholds,
    );

    let recalled = recent_requests(&queue);
    if !recalled.is_empty() {
        log::info!(
            "store: {} requests stored in the last {}s are remembered, so their retransmissions are answered, not stored again",
            recalled.len(),
            store::RECALL_LIFETIME_MS / 1000
        );
    }

    let (routes_tx, routes) = watch::channel(Arc::new(config.router()));
    let (shutdown_tx, shutdown) = watch::channel(false);

    let devices = crate::devices::shared(config.admin.max_devices);
    metrics.set_devices(devices.clone());

    // Commands to devices, when there are command tables: the mailbox is
    // rebuilt from its journal before any device can ask.
    let (results_tx, results_rx) = tokio::sync::mpsc::unbounded_channel();
    let commands = match config.commands.tables.is_empty() {
        true => None,
        false => {
            let journal = std::path::Path::new(&config.store.path).join("commands.log");
            let service = command::service::Service::open(
                command::service::Settings {
                    tables: config.commands.tables.clone(),
                    gateway: config.gateway.id.clone(),
                    limits: config.commands.limits,
                    max_payload: config.commands.max_payload,
                },
                &journal,
                results_tx,
            )
            .with_context(|| format!("commands: cannot open the journal {}", journal.display()))?;
            let table = devices.clone();
            let service = service.knowing(move |device| {
                table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .knows(device)
            });
            Some(Arc::new(service))
        }
    };
    if let Some(service) = &commands {
        metrics.set_commands(service.clone());
        log::info!(
            "commands: subscribing to {} (devices GET {}?device=NAME, or over DTLS as their identity)",
            service.filters().join(", "),
            config.commands.path
        );
    }

    // One CoAP server (and so one exchange) per socket, whatever the transport.
    let listeners = Listeners {
        devices,
        commands: commands.clone(),
        exchange: exchange_config(&config),
        recalled,
        metrics: metrics.clone(),
        routes,
        store: store.clone(),
        shutdown: shutdown.clone(),
    };
    let mut servers = Vec::new();
    let plain = PlainCoap::judge(&config.coap.listen, &config.routes);
    log::log!(plain.level(), "{}", plain.describe(&config.source));
    for addr in &config.coap.listen {
        match UdpLink::bind(*addr).await {
            Ok(link) => servers.push(listeners.serve(link, "udp")),
            // The packaged config lists [::1] beside 127.0.0.1; a machine
            // with IPv6 turned off still serves the IPv4 loopback.
            Err(e) if addr.ip() == Ipv6Addr::LOCALHOST && no_ipv6(&e) => {
                log::warn!("coap.listen: {addr} left out: this machine has no IPv6 ({e})")
            }
            Err(e) => {
                return Err(e).with_context(|| format!("coap.listen: cannot bind UDP {addr}"))
            }
        }
    }
    let dtls = match config.dtls.enabled() {
        true => Some(Arc::new(Dtls::new(&config.dtls)?)),
        false => None,
    };
    if let Some(dtls) = &dtls {
        for addr in &config.dtls.listen {
            let link = dtls
                .bind(*addr)
                .with_context(|| format!("dtls.listen: cannot bind UDP {addr}"))?;
            servers.push(listeners.serve(link, "dtls"));
        }
    }
    drop(listeners);

    let settings = uplink_settings(&config)?;
    log::info!(
        "uplink: broker {} as client id {:?}",
        settings.urls(),
        settings.client_id
    );
    let broker = settings.urls();
    let mut uplink = Uplink::new(settings, queue.clone(), store.clone());
    if let Some(service) = commands {
        let link = command::runtime::spawn(service, results_rx, store.clone(), shutdown.clone());
        uplink = uplink.with_commands(link);
    }
    metrics.set_uplink(uplink.stats(), broker);
    let uplink_task = tokio::spawn(uplink.run(shutdown.clone()));
    crate::admin::socket::spawn(
        config.admin.socket.clone(),
        queue.clone(),
        store.downgrade(),
        shutdown.clone(),
    )
    .await;
    drop(store);
    crate::admin::spawn(config.admin.listen, metrics.clone(), shutdown.clone()).await;
    tokio::spawn(crate::watchdog::run(metrics, shutdown.clone()));

    let reloader = tokio::spawn(reload_on_sighup(config.clone(), routes_tx, dtls));

    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    log::info!("coap2mqtt {} ready", env!("CARGO_PKG_VERSION"));

    wait_for_stop_signal().await?;
    log::info!("stopping: answering requests in flight, then closing the uplink");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = shutdown_tx.send(true);
    for server in servers {
        if tokio::time::timeout(STAGE_TIMEOUT, server).await.is_err() {
            log::warn!("stopping: a CoAP listener did not finish in time");
        }
    }
    if tokio::time::timeout(STAGE_TIMEOUT, uplink_task)
        .await
        .is_err()
    {
        log::warn!("stopping: the uplink did not close in time");
    }
    reloader.abort();
    // Every store handle is gone now; the committer flushes and ends.
    tokio::task::spawn_blocking(move || committer.join())
        .await
        .context("waiting for the store")?
        .map_err(|_| anyhow::anyhow!("the store's commit thread panicked"))?;
    log::info!("stopped; {} messages stay queued", queue.depth().0);
    Ok(())
}

/// What every CoAP server shares: the exchange's limits, the routes, the
/// store and the shutdown signal.
struct Listeners {
    exchange: ExchangeConfig,
    commands: Option<Arc<command::service::Service>>,
    devices: crate::devices::SharedDevices,
    /// Requests stored before this start, for deduplication.
    recalled: Vec<(Recall, Duration)>,
    metrics: Arc<Metrics>,
    routes: watch::Receiver<Arc<Router>>,
    store: StoreHandle<Receipt>,
    shutdown: watch::Receiver<bool>,
}

impl Listeners {
    /// Starts the CoAP server of one socket; `kind` labels its metrics.
    fn serve<L: Link + 'static>(&self, link: L, kind: &'static str) -> tokio::task::JoinHandle<()> {
        log::info!("coap: listening on {}", link.name());
        let mut exchange = Exchange::new(self.exchange.clone(), rand::random());
        exchange.recall(self.recalled.clone(), std::time::Instant::now());
        let server = Server {
            link,
            metrics: self.metrics.transport(kind),
            exchange,
            routes: self.routes.clone(),
            store: self.store.clone(),
            devices: self.devices.clone(),
            commands: self.commands.clone(),
        };
        tokio::spawn(server.serve(self.shutdown.clone()))
    }
}

/// The requests stored within the last EXCHANGE_LIFETIME, with their age,
/// for each exchange's deduplication table (see `coap::recall`).
fn recent_requests(queue: &Queue) -> Vec<(Recall, Duration)> {
    let now = crate::clock::now_ms();
    queue
        .take_recalls(now.saturating_sub(store::RECALL_LIFETIME_MS))
        .into_iter()
        .filter_map(|(received_ms, bytes)| {
            let age = Duration::from_millis(now.saturating_sub(received_ms));
            Some((Recall::decode(&bytes)?, age))
        })
        .collect()
}

/// The error of binding an IPv6 address where IPv6 is off: the address is
/// not there (sysctl disable_ipv6) or the family is not (ipv6.disable=1,
/// EAFNOSUPPORT, 97 on Linux).
fn no_ipv6(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(97)
}

fn exchange_config(config: &Config) -> ExchangeConfig {
    ExchangeConfig {
        max_payload: config.coap.max_payload,
        dedup_capacity: config.coap.dedup_capacity,
        block_capacity: config.coap.block_capacity,
        block_lifetime: Duration::from_secs(config.coap.block_lifetime_s),
        full_retry_after_s: config.coap.full_retry_after_s,
        max_packet_size: config.mqtt.max_packet_size,
        mailbox: (!config.commands.tables.is_empty()).then(|| config.commands.path.clone()),
    }
}

fn uplink_settings(config: &Config) -> anyhow::Result<uplink::Settings> {
    let mqtt = &config.mqtt;
    let tls = if mqtt.endpoints.iter().any(|e| e.tls()) {
        Some(tls::client_config(&tls::TlsFiles {
            ca_file: mqtt.ca_file.as_deref(),
            client_cert: mqtt.client_cert.as_deref(),
            client_key: mqtt.client_key.as_deref(),
            alpn: &mqtt.alpn,
        })?)
    } else {
        None
    };
    let password = mqtt.read_password()?;
    let credentials = match (&mqtt.username, password) {
        (Some(user), password) => Some((user.clone(), password.unwrap_or_default())),
        (None, Some(_)) => anyhow::bail!("mqtt.password_file is set but mqtt.username is not"),
        (None, None) => None,
    };
    let proxy = match &mqtt.proxy {
        None => None,
        Some(p) => Some(uplink::ProxySettings {
            host: p.host.clone(),
            port: p.port,
            credentials: p
                .credentials_file
                .as_deref()
                .map(read_proxy_credentials)
                .transpose()?,
        }),
    };
    Ok(uplink::Settings {
        brokers: mqtt.endpoints.clone(),
        protocol: mqtt.protocol,
        proxy,
        gateway: config.gateway.id.clone(),
        tls,
        client_id: mqtt.client_id.clone(),
        credentials,
        keep_alive: Duration::from_secs(mqtt.keep_alive_s),
        inflight: mqtt.inflight,
        status_topic: mqtt.status_topic.clone(),
        reconnect_min: Duration::from_millis(mqtt.reconnect_min_ms),
        reconnect_max: Duration::from_secs(mqtt.reconnect_max_s),
        connect_timeout: Duration::from_secs(5),
        max_packet_size: mqtt.max_packet_size,
        max_attempts: mqtt.max_attempts,
        subscriptions: config
            .commands
            .tables
            .iter()
            .map(|t| t.filter.clone())
            .collect(),
    })
}

/// `user:password` from `mqtt.proxy_credentials_file` (first line).
fn read_proxy_credentials(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "mqtt.proxy_credentials_file {}: cannot read",
            path.display()
        )
    })?;
    let line = text.lines().next().unwrap_or("").trim();
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_string(), password.to_string())),
        _ => anyhow::bail!(
            "mqtt.proxy_credentials_file {}: expected one line \"user:password\"",
            path.display()
        ),
    }
}

/// Applies a changed config and the PSK file on SIGHUP; a broken one is
/// refused and the running one stays in force.
async fn reload_on_sighup(
    mut running: Config,
    routes: watch::Sender<Arc<Router>>,
    dtls: Option<Arc<Dtls>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("reload: cannot install the SIGHUP handler: {e}");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        match reload::reread(&running) {
            Ok(reload) => {
                if reload.routes_changed {
                    routes.send_replace(Arc::new(reload.config.router()));
                    log::info!(
                        "reload: applied [[route]]: {} routes in force",
                        reload.config.routes.len()
                    );
                } else {
                    log::info!("reload: routes unchanged");
                }
                if reload.log_level_changed {
                    let level = reload.config.log.level;
                    match crate::logging::set_level(level) {
                        Some(max) if max != level => log::info!(
                            "reload: applied [log] level = {level} (RUST_LOG overrides it: {max} in force)"
                        ),
                        _ => log::info!("reload: applied [log] level = {level}"),
                    }
                }
                if !reload.needs_restart.is_empty() {
                    log::warn!(
                        "reload: changes to [{}] are NOT applied: they take effect only after a restart",
                        reload.needs_restart.join("], [")
                    );
                }
                running = reload.config;
            }
            Err(problems) => {
                log::error!("reload: the new config is refused, the running one stays in force:\n{problems}");
            }
        }
        if let Some(dtls) = &dtls {
            dtls.reload_psk();
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
