//! The admin endpoint: a small HTTP/1.1 server (hyper) for monitoring, and
//! the client `coap2mqtt status` uses to read it.
//!
//! - `GET /metrics`: OpenMetrics text (see `metrics`).
//! - `GET /healthz`: 200 `healthy`, or 503 with the reasons, one per line:
//!   the store cannot be written, or the pipeline is stalled.
//! - `GET /status`: the figures for a person; 200 or 503 like `/healthz`.
//! - `GET /status.json`: the same figures for a program (always 200; its
//!   `health` says), with the newest dead letters' ids, topics and reasons.
//! - `GET /`: the status page (`admin/page.html`, one self-contained file:
//!   no external assets), which renders itself from `/status.json`.
//!
//! It has no authentication and serves only figures, never a message's
//! payload, a key or a password: reading and changing the dead letters
//! goes through the admin socket (`socket.rs`), which the file system
//! guards. It listens on the loopback interface by default.
//! Connections are few and short: each one is bounded in time, and only
//! [`MAX_CONNECTIONS`] are served at once, so a scan cannot eat the daemon.

pub mod dead_letters;
pub mod protocol;
pub mod socket;

use crate::metrics::Metrics;
use anyhow::Context;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// The longest a connection may live.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
/// How long `coap2mqtt status` waits for the daemon.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer the client reads.
const MAX_ANSWER: usize = 1 << 20;

/// Binds the endpoint when `listen` is set and serves it in a task until
/// `shutdown`.
///
/// An address that cannot be bound is logged as an error and the daemon
/// runs on without the endpoint: moving messages matters more than
/// reporting on them, and a port taken by another program must not keep a
/// gateway from forwarding its devices' data.
pub async fn spawn(
    listen: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(addr) = listen else {
        log::info!("admin: endpoint off (admin.listen = \"\")");
        return;
    };
    match Admin::bind(addr, metrics).await {
        Ok(admin) => {
            log::info!(
                "admin: status page, /metrics, /healthz, /status and /status.json on http://{addr}/"
            );
            tokio::spawn(admin.serve(shutdown));
        }
        Err(e) => log::error!("{e:#}; running without /metrics, /healthz and /status"),
    }
}

/// The bound endpoint, not yet serving.
pub struct Admin {
    listener: TcpListener,
    metrics: Arc<Metrics>,
}

impl Admin {
    /// Binds `addr`; fails like `coap.listen` does, at start-up.
    pub async fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<Admin> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("admin.listen: cannot bind TCP {addr}"))?;
        Ok(Admin { listener, metrics })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = shutdown.changed() => return,
            };
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait a little.
                        log::warn!("admin: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let metrics = metrics.clone();
                    async move {
                        let response = match request.uri().path() {
                            "/status.json" if is_get(&request) => status_json(metrics).await,
                            _ => answer(&metrics, &request),
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                drop(permit);
            });
        }
    }
}

/// The status page: one file, its CSS and JavaScript inline.
const STATUS_PAGE: &str = include_str!("admin/page.html");

fn is_get<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET || request.method() == Method::HEAD
}

/// `/status.json`, read off the runtime (the newest dead letters come from
/// disk, behind the store's writer lock).
async fn status_json(metrics: Arc<Metrics>) -> Response<Full<Bytes>> {
    match tokio::task::spawn_blocking(move || metrics.status_json().1).await {
        Ok(value) => text(StatusCode::OK, value.to_string(), "application/json"),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the figures could not be read\n".into(),
            "text/plain",
        ),
    }
}

/// The response to one request.
fn answer<B>(metrics: &Metrics, request: &Request<B>) -> Response<Full<Bytes>> {
    if !is_get(request) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".into(),
            "text/plain",
        );
    }
    match request.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            metrics.render(),
            crate::metrics::CONTENT_TYPE,
        ),
        "/healthz" => {
            let verdict = metrics.check();
            let status = if verdict.healthy() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, verdict.describe() + "\n", "text/plain")
        }
        "/status" => {
            let (verdict, body) = metrics.status();
            let status = if verdict.healthy() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, body, "text/plain; charset=utf-8")
        }
        "/devices" => match metrics.devices() {
            Some(table) => {
                let mut listing = {
                    let table = table.lock().unwrap_or_else(|p| p.into_inner());
                    crate::devices::Listing::of(&table, crate::clock::now_ms())
                };
                if let Some(commands) = metrics.commands() {
                    for device in &mut listing.devices {
                        device.pending_commands = Some(commands.pending_for(&device.name));
                    }
                }
                text(StatusCode::OK, listing.to_json() + "\n", "application/json")
            }
            None => text(
                StatusCode::NOT_FOUND,
                "no device table yet\n".into(),
                "text/plain",
            ),
        },
        "/" => {
            let mut page = text(
                StatusCode::OK,
                STATUS_PAGE.into(),
                "text/html; charset=utf-8",
            );
            // Nothing but this page and this endpoint: no external assets,
            // and a topic that looks like markup stays text.
            page.headers_mut().insert(
                hyper::header::CONTENT_SECURITY_POLICY,
                hyper::header::HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; \
                     script-src 'unsafe-inline'; connect-src 'self'",
                ),
            );
            page
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /, /metrics, /healthz, /status, /status.json or /devices\n".into(),
            "text/plain",
        ),
    }
}

fn text(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// `GET path` from the daemon's admin endpoint: the status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(CLIENT_TIMEOUT, get_inner(addr, path))
        .await
        .map_err(|_| anyhow::anyhow!("{addr} did not answer within {CLIENT_TIMEOUT:?}"))?
}

async fn get_inner(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach the daemon's admin endpoint at {addr}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the admin endpoint")?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .context("asking the admin endpoint")?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `coap2mqtt status`: prints the daemon's `/status`. Exit 0 when healthy,
/// 1 when the daemon says it is not, 2 when it cannot be asked. Every error
/// is printed on lines of its own, followed by what to do about it.
/// Where the running daemon's admin endpoint is: `--admin`, or the
/// config's `admin.listen`; with where that came from, for errors.
fn endpoint(
    config: &std::path::Path,
    admin: Option<SocketAddr>,
    command: &str,
) -> Result<(SocketAddr, String), ExitCode> {
    let (addr, from) = match admin {
        Some(addr) => (addr, "the one given with --admin".to_string()),
        None => match crate::config::Config::load(config) {
            Ok(c) => match c.admin.listen {
                Some(addr) => (addr, format!("admin.listen of {}", config.display())),
                None => {
                    eprintln!(
                        "{}: admin.listen is \"\": the daemon has no admin endpoint to ask.\n  \
                         Set admin.listen (e.g. \"127.0.0.1:9464\") and restart the daemon, or give \
                         the config of another daemon with --config FILE.",
                        config.display()
                    );
                    return Err(ExitCode::from(2));
                }
            },
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!(
                    "  `coap2mqtt {command}` reads the admin endpoint's address (admin.listen) from \
                     the daemon's config: give it with --config FILE, or give the endpoint with \
                     --admin ADDR:PORT (the default is --admin 127.0.0.1:9464)."
                );
                return Err(ExitCode::from(2));
            }
        },
    };
    let addr = match addr.ip() {
        // A daemon listening on every address answers on the loopback one.
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    };
    Ok((addr, from))
}

/// `GET path` from the endpoint, on a runtime of its own (the CLI has none).
fn ask(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    runtime.block_on(get(addr, path))
}

fn not_reached(e: &anyhow::Error, from: &str) -> ExitCode {
    eprintln!("{e:#}");
    eprintln!(
        "  That address is {from}. Is the daemon running? `systemctl status coap2mqtt` \
         tells. If its admin endpoint is elsewhere, give it with --admin ADDR:PORT, or \
         give the daemon's config with --config FILE."
    );
    ExitCode::from(2)
}

/// `coap2mqtt devices`: the running daemon's device table, as a table or
/// as the endpoint's JSON; `quiet_for` keeps only devices not heard from
/// for at least that long.
pub fn devices_command(
    config: &std::path::Path,
    admin: Option<SocketAddr>,
    json: bool,
    quiet_for: Option<std::time::Duration>,
) -> ExitCode {
    let (addr, from) = match endpoint(config, admin, "devices") {
        Ok(found) => found,
        Err(code) => return code,
    };
    let body = match ask(addr, "/devices") {
        Ok((200, body)) => body,
        Ok((status, body)) => {
            eprintln!("the daemon at {addr} answered {status}: {}", body.trim());
            eprintln!("  A daemon older than 0.2 has no device table: upgrade it.");
            return ExitCode::from(1);
        }
        Err(e) => return not_reached(&e, &from),
    };
    match crate::devices::Listing::parse(&body) {
        Ok(listing) => {
            let listing = match quiet_for {
                Some(quiet) => listing.quiet_for(quiet),
                None => listing,
            };
            if json {
                println!("{}", listing.to_json());
            } else {
                print!("{}", listing.render());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("the daemon at {addr} sent a device table this CLI cannot read: {e}");
            eprintln!(
                "  Are the CLI and the daemon the same version? `coap2mqtt --version` tells."
            );
            ExitCode::from(2)
        }
    }
}

pub fn status_command(config: &std::path::Path, admin: Option<SocketAddr>) -> ExitCode {
    let (addr, from) = match endpoint(config, admin, "status") {
        Ok(found) => found,
        Err(code) => return code,
    };
    match ask(addr, "/status") {
        Ok((200, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((_, body)) => {
            print!("{body}");
            ExitCode::from(1)
        }
        Err(e) => not_reached(&e, &from),
    }
}
