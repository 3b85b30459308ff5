//! `coap-load`: simulated CoAP devices against a server; JSON report on
//! stdout. See docs/BENCHMARKS.md and `coap-load --help`.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use coap2mqtt_bench::link::Transport;
use coap2mqtt_bench::load::{self, LoadConfig, Method, Transmission};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Con,
    Non,
}

#[derive(Clone, Copy, ValueEnum)]
enum Verb {
    Post,
    Put,
}

#[derive(Parser)]
#[command(
    name = "coap-load",
    about = "CoAP load generator: N devices, closed loop or fixed rate; JSON report on stdout"
)]
struct Cli {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:5683")]
    target: String,
    /// Simulated devices, each with its own socket and one request at a time.
    #[arg(long, default_value_t = 64)]
    devices: usize,
    #[arg(long = "type", value_enum, default_value = "con")]
    kind: Kind,
    #[arg(long, value_enum, default_value = "post")]
    method: Verb,
    /// Payload bytes (at least 8: the device's sequence number).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Offered load in messages per second over all devices (open loop).
    /// Without it, each device sends again as soon as it is answered.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests in total (whichever comes first).
    #[arg(long)]
    count: Option<u64>,
    /// Device i sends to <path-prefix>/d<i>.
    #[arg(long, default_value = "bench/load")]
    path_prefix: String,
    /// NON with No-Response (RFC 7967): fire and forget; needs --rate.
    #[arg(long)]
    no_response: bool,
    /// Seconds to wait for the NON 2.04 to a NON request.
    #[arg(long, default_value_t = 2.0)]
    non_timeout: f64,
    /// Seconds outstanding exchanges may take after the load ends.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
    /// RFC 7252 ACK_TIMEOUT in milliseconds.
    #[arg(long, default_value_t = 2000)]
    ack_timeout_ms: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// DTLS-PSK devices: identity prefix (device i is <prefix><i>); the
    /// target is then the daemon's DTLS port.
    #[arg(long)]
    psk_identity_prefix: Option<String>,
    /// DTLS-PSK key, hex.
    #[arg(long, requires = "psk_identity_prefix")]
    psk_key_hex: Option<String>,
    /// Connect every device, hold the sessions idle this many seconds, send
    /// nothing, and exit (prints "connected N devices" to stderr first).
    #[arg(long)]
    idle_hold: Option<f64>,
    /// Send CBOR with Content-Format 60 (`{"seq": N, "pad": …}`).
    #[arg(long)]
    cbor: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target: SocketAddr = cli
        .target
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", cli.target))?
        .next()
        .context("no address")?;
    let transport = match cli.psk_identity_prefix {
        Some(identity_prefix) => Transport::Dtls {
            identity_prefix,
            key_hex: cli.psk_key_hex.unwrap_or_default(),
        },
        None => Transport::Udp,
    };
    let config = LoadConfig {
        target,
        transport,
        devices: cli.devices,
        confirmable: matches!(cli.kind, Kind::Con),
        method: match cli.method {
            Verb::Post => Method::Post,
            Verb::Put => Method::Put,
        },
        payload: cli.payload.max(8),
        rate: cli.rate,
        duration: Duration::from_secs_f64(cli.duration),
        count: cli.count,
        path_prefix: cli.path_prefix,
        no_response: cli.no_response,
        non_timeout: Duration::from_secs_f64(cli.non_timeout),
        grace: Duration::from_secs_f64(cli.grace),
        transmission: Transmission {
            ack_timeout_ms: cli.ack_timeout_ms,
            ..Transmission::default()
        },
        idle_hold: cli.idle_hold.map(Duration::from_secs_f64),
        cbor: cli.cbor,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(load::run(config.clone()))?;
    let out = serde_json::json!({ "config": config, "report": report });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
