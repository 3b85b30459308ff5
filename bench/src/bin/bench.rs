//! `bench`: the benchmark driver (run it through scripts/bench).
//!
//! One run on this machine: its own mosquitto, the release daemon, a QoS 1
//! subscriber that counts and checks, the ceilings, then every figure of
//! issue 5 that can be measured today. Writes target/bench/results.json and
//! the generated section of docs/BENCHMARKS.md with its plots.

use anyhow::Context;
use clap::Parser;
use coap2mqtt_bench::harness::broker::Broker;
use coap2mqtt_bench::harness::ceiling::{self, Echo};
use coap2mqtt_bench::harness::commander::Commander;
use coap2mqtt_bench::harness::daemon::{
    disk_usage, histogram_quantiles, metrics, rss_bytes, status_bytes, Daemon, DaemonConfig,
    DtlsListener, RssSampler,
};
use coap2mqtt_bench::harness::machine::{udp_rcvbuf_errors, Machine};
use coap2mqtt_bench::harness::procfs::{self, Mark};
use coap2mqtt_bench::harness::subscriber::Subscriber;
use coap2mqtt_bench::harness::{free_tcp_port, free_udp_port};
use coap2mqtt_bench::load::{unix_us, LoadReport};
use coap2mqtt_bench::report;
use coap2mqtt_bench::results::*;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "coap2mqtt benchmark driver (see docs/BENCHMARKS.md)"
)]
struct Cli {
    /// Smoke test: short runs, one repeat, small queues (~1-2 minutes).
    /// Its figures are noisy and only show that the instrument works.
    #[arg(long)]
    quick: bool,
    /// The repository root (docs/ and target/ are found from here).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// The daemon binary (default: <root>/target/release/coap2mqtt).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Do not touch docs/ (results.json is still written).
    #[arg(long)]
    no_docs: bool,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// mqtt.inflight of the daemon (its default), and the bare publisher's
    /// window.
    #[arg(long, default_value_t = 256)]
    inflight: u16,
    /// store.commit_max_batch of the daemon.
    #[arg(long, default_value_t = 1024)]
    commit_max_batch: usize,
    /// Override: seconds per throughput point.
    #[arg(long)]
    duration: Option<f64>,
    /// Override: repeats per point (medians are quoted).
    #[arg(long)]
    repeats: Option<usize>,
    /// Override: messages queued for the drain phase.
    #[arg(long)]
    drain_messages: Option<u64>,
    /// Override: messages queued for the RSS / start-up phase.
    #[arg(long)]
    queued_messages: Option<u64>,
    /// Skip the drain and queued phases (throughput and latency only).
    #[arg(long)]
    skip_queue_phases: bool,
    /// Extra environment for the daemon, KEY=VALUE (repeatable), for
    /// experiments such as MALLOC_ARENA_MAX=2; recorded in the results.
    #[arg(long = "daemon-env")]
    daemon_env: Vec<String>,
}

struct Ctx {
    cli: Cli,
    settings: Settings,
    work: PathBuf,
    load_bin: PathBuf,
    daemon_bin: PathBuf,
    rt: Runtime,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let started = Instant::now();
    let root = cli.root.canonicalize().context("--root")?;
    let (duration, repeats, drain, queued, lat_dur) = if cli.quick {
        (2.0, 1, 30_000, 60_000, 3.0)
    } else {
        (10.0, 3, 500_000, 2_000_000, 15.0)
    };
    let settings = Settings {
        duration_s: cli.duration.unwrap_or(duration),
        repeats: cli.repeats.unwrap_or(repeats).max(1),
        concurrencies: vec![1, 16, 64, 256],
        payload_bytes: cli.payload.max(8),
        inflight: cli.inflight,
        commit_max_batch: cli.commit_max_batch,
        latency_devices: 256,
        latency_duration_s: cli.duration.map_or(lat_dur, |d| d * 1.5),
        drain_messages: cli.drain_messages.unwrap_or(drain),
        queued_messages: cli.queued_messages.unwrap_or(queued),
        daemon_env: cli.daemon_env.clone(),
    };
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("executable directory")?
        .to_path_buf();
    let load_bin = exe_dir.join("coap-load");
    let daemon_bin = cli
        .daemon
        .clone()
        .unwrap_or_else(|| root.join("target/release/coap2mqtt"));
    anyhow::ensure!(
        daemon_bin.exists(),
        "{} not found: run `cargo build --release` first (scripts/bench does)",
        daemon_bin.display()
    );
    anyhow::ensure!(load_bin.exists(), "{} not found", load_bin.display());
    // Temp dirs under target/ so the store is on the same disk as the repo.
    let work = root.join(format!("target/bench/work-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ctx = Ctx {
        cli,
        settings,
        work: work.clone(),
        load_bin,
        daemon_bin,
        rt,
    };

    let mut results = Results {
        mode: if ctx.cli.quick { "quick" } else { "full" }.into(),
        started_unix_s: unix_us() / 1_000_000,
        machine: Machine::read(),
        settings: ctx.settings.clone(),
        ..Results::default()
    };
    let outcome = run_all(&ctx, &mut results);
    results.total_seconds = started.elapsed().as_secs_f64();
    let out_dir = root.join("target/bench");
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    eprintln!("bench: wrote {}", out_dir.join("results.json").display());
    if let Err(e) = &outcome {
        eprintln!("bench: stopped early: {e:#}");
    }
    if !ctx.cli.no_docs {
        report::write_docs(&root, &results)?;
        eprintln!("bench: updated docs/BENCHMARKS.md and docs/bench/*.svg");
    }
    print!("{}", report::summary_table(&results));
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    }
    outcome
}

fn say(what: &str) {
    eprintln!("bench: {what}");
}

fn run_all(ctx: &Ctx, results: &mut Results) -> anyhow::Result<()> {
    let s = ctx.settings.clone();
    // --- ceilings and the main daemon ------------------------------------
    let broker = Broker::start(free_tcp_port()?, &ctx.work.join("broker"), false)?;
    let sub = ctx.rt.block_on(Subscriber::start(
        broker.port,
        "bench-sub",
        &["bench/#", "ceiling/#"],
        false,
    ))?;

    say("ceiling: bare rumqttc QoS 1 publisher into mosquitto");
    for r in 0..s.repeats {
        // On a runtime of its own shaped like the daemon's (two workers),
        // as the daemon's uplink is in a process of its own: sharing the
        // subscriber's runtime would lower the ceiling.
        let marks = (broker.pid().map(Mark::now), Mark::now(std::process::id()));
        let mut run = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()?
                        .block_on(ceiling::bare_publisher(
                            broker.port,
                            &sub,
                            &format!("m{r}"),
                            64,
                            s.payload_bytes,
                            s.inflight,
                            Duration::from_secs_f64(s.duration_s),
                        ))
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the bare publisher panicked"))?
        })?;
        run.broker_cpu_us = marks.0.map_or(0, |m| m.since().cpu_us);
        run.driver_cpu_us = marks.1.since().cpu_us;
        say(&format!("  {:.0} msg/s", run.rate_per_s));
        results.ceilings.mqtt_runs.push(run);
    }
    results.ceilings.mqtt_median = median(
        &results
            .ceilings
            .mqtt_runs
            .iter()
            .map(|r| r.rate_per_s)
            .collect::<Vec<_>>(),
    );

    say("ceiling: UDP echo round trips");
    {
        let echo = Echo::start()?;
        for &c in &s.concurrencies {
            let mut runs = Vec::new();
            let mut lat = Vec::new();
            for r in 0..s.repeats {
                let rep = ctx.load(&[
                    ("--target", echo.addr.to_string()),
                    ("--devices", c.to_string()),
                    ("--duration", s.duration_s.to_string()),
                    ("--path-prefix", format!("echo/c{c}r{r}")),
                ])?;
                runs.push(rep.rate_ok_per_s);
                lat.push(rep);
            }
            let m = median(&runs);
            let latency_us = lat
                .iter()
                .find(|r| r.rate_ok_per_s == m)
                .map(|r| r.latency_us.clone())
                .unwrap_or_default();
            say(&format!("  c={c}: {m:.0} round trips/s"));
            results.ceilings.udp_echo.push(EchoPoint {
                concurrency: c,
                runs,
                median: m,
                latency_us,
            });
        }
    }

    let mut daemon = Daemon::start(
        &ctx.daemon_bin,
        &ctx.work.join("daemon-main"),
        DaemonConfig {
            coap_port: free_udp_port()?,
            mqtt_port: broker.port,
            inflight: s.inflight,
            commit_max_batch: s.commit_max_batch,
            store_path: ctx.work.join("daemon-main/queue"),
            env: ctx.env(),
            dtls: None,
            admin_port: Some(free_tcp_port()?),
            protocol: None,
            commands: false,
        },
    )?;
    results.memory.ready_empty_s = daemon.ready_after.as_secs_f64();
    let pid = daemon.pid().context("daemon pid")?;
    std::thread::sleep(Duration::from_secs(1));
    results.memory.rss_idle = rss_bytes(pid).unwrap_or(0);
    results.memory.rss_idle_anon = status_bytes(pid, "RssAnon:").unwrap_or(0);
    results.memory.rss_idle_file = status_bytes(pid, "RssFile:").unwrap_or(0);
    say(&format!(
        "daemon ready in {:.3} s; idle RSS {:.1} MB",
        results.memory.ready_empty_s,
        results.memory.rss_idle as f64 / 1e6
    ));
    let sampler = RssSampler::start(pid);

    // --- end-to-end throughput --------------------------------------------
    for kind in ["CON", "NON"] {
        for &c in &s.concurrencies {
            let mut runs = Vec::new();
            for r in 0..s.repeats {
                let run_name = format!("{}{c}r{r}", kind.to_lowercase());
                let drops_before = udp_rcvbuf_errors();
                let marks = (Mark::now(pid), broker.pid().map(Mark::now));
                let driver = Mark::now(std::process::id());
                let rep = ctx.load(&[
                    ("--target", daemon.coap_addr().to_string()),
                    ("--devices", c.to_string()),
                    ("--type", kind.to_lowercase()),
                    ("--duration", s.duration_s.to_string()),
                    ("--payload", s.payload_bytes.to_string()),
                    ("--path-prefix", format!("bench/{run_name}")),
                ])?;
                let mut run = ctx.e2e(&sub, &run_name, rep);
                run.rcvbuf_errors = udp_rcvbuf_errors().saturating_sub(drops_before);
                let daemon_usage = marks.0.since();
                run.daemon_cpu_us = daemon_usage.cpu_us;
                run.daemon_write_bytes = daemon_usage.write_bytes;
                run.broker_cpu_us = marks.1.map_or(0, |m| m.since().cpu_us);
                run.subscriber_cpu_us = driver.since().cpu_us;
                runs.push(run);
            }
            let point = ThroughputPoint::of(kind, c, runs);
            let (median_e2e, median_coap, latency_us) =
                (point.median_e2e, point.median_coap, &point.latency_us);
            let first = &point.runs[0];
            let (daemon_cpu, broker_cpu) = first.cpu_per_message();
            say(&format!(
                "{kind} c={c}: e2e {median_e2e:.0}/s, coap {median_coap:.0}/s, p99 {} µs, CPU/msg daemon {daemon_cpu:.1} µs broker {broker_cpu:.1} µs (missing {}, dup {}, reordered {}, retransmissions {}, timeouts {}, NON lost {}, rcvbuf drops {})",
                latency_us.p99, first.missing, first.duplicates, first.out_of_order, first.load.retransmissions, first.load.timeouts, first.load.non_lost, first.rcvbuf_errors
            ));
            results.throughput.push(point);
        }
    }
    results.memory.rss_full_load = sampler.take_peak();
    if let Some(port) = daemon.config.admin_port {
        if let Some((p50, p99)) =
            histogram_quantiles(&metrics(port), "coap2mqtt_store_commit_seconds")
        {
            say(&format!("commit latency over the throughput runs: p50 <= {:.0} µs, p99 <= {:.0} µs (bucket bounds)", p50 * 1e6, p99 * 1e6));
            results.commit_latency_us = Some(((p50 * 1e6) as u64, (p99 * 1e6) as u64));
        }
    }

    // --- latency at fixed offered rates --------------------------------------
    let max_rate = results
        .throughput
        .iter()
        .filter(|p| p.kind == "CON")
        .map(|p| p.median_e2e)
        .fold(0.0, f64::max);
    results.latency.max_rate = max_rate;
    for fraction in [0.25, 0.5, 0.9] {
        let offered = (max_rate * fraction).max(1.0);
        let mut runs = Vec::new();
        for r in 0..s.repeats {
            let run_name = format!("lat{}r{r}", (fraction * 100.0) as u32);
            let rep = ctx.load(&[
                ("--target", daemon.coap_addr().to_string()),
                ("--devices", s.latency_devices.to_string()),
                ("--rate", format!("{offered:.1}")),
                ("--duration", s.latency_duration_s.to_string()),
                ("--payload", s.payload_bytes.to_string()),
                ("--path-prefix", format!("bench/{run_name}")),
            ])?;
            let _ = ctx.e2e(&sub, &run_name, rep.clone());
            runs.push(rep);
        }
        let p = LatencyPoint {
            fraction,
            offered,
            achieved_median: median(&runs.iter().map(|r| r.rate_ok_per_s).collect::<Vec<_>>()),
            p50_us: median_u64(&runs.iter().map(|r| r.latency_us.p50).collect::<Vec<_>>()),
            p99_us: median_u64(&runs.iter().map(|r| r.latency_us.p99).collect::<Vec<_>>()),
            p999_us: median_u64(&runs.iter().map(|r| r.latency_us.p999).collect::<Vec<_>>()),
            p99_from_schedule_us: median_u64(
                &runs
                    .iter()
                    .map(|r| r.latency_from_schedule_us.p99)
                    .collect::<Vec<_>>(),
            ),
            runs,
        };
        say(&format!(
            "latency at {:.0}% ({offered:.0}/s): p50 {} µs, p99 {} µs, p99.9 {} µs (p99 from schedule {} µs)",
            fraction * 100.0,
            p.p50_us,
            p.p99_us,
            p.p999_us,
            p.p99_from_schedule_us
        ));
        results.latency.points.push(p);
    }
    results.memory.rss_full_load = results.memory.rss_full_load.max(sampler.take_peak());
    drop(sampler);
    daemon.stop();
    results.daemon_warnings.extend(daemon.warnings());
    drop(daemon);

    results.durability = durability_phase(ctx, &broker, &sub, results)?;
    results.mqtt_versions = Some(mqtt_versions_phase(ctx, &broker, &sub)?);
    results.payload_formats = Some(payload_formats_phase(ctx, &broker, &sub)?);
    results.commands = Some(commands_phase(ctx, &broker, &sub)?);
    results.dtls = Some(dtls_phase(ctx, &broker, &sub)?);
    ctx.rt.block_on(sub.disconnect());
    drop(broker);
    results.dedup = dedup_footprint(ctx);

    if ctx.cli.skip_queue_phases {
        return Ok(());
    }
    results.drain = Some(drain_phase(ctx, results)?);
    results.queued = Some(queued_phase(ctx, results)?);
    Ok(())
}

/// What durability costs: CON at 64 devices against the real daemon and
/// against one whose fsync/fdatasync are no-ops (the LD_PRELOAD shim that
/// scripts/bench builds from bench/nofsync.c), alternating runs. The shim
/// makes a daemon that lies; it exists only for this comparison.
fn durability_phase(
    ctx: &Ctx,
    broker: &Broker,
    sub: &Subscriber,
    results: &mut Results,
) -> anyhow::Result<Option<DurabilityCost>> {
    let shim = ctx.cli.root.join("target/bench/libnofsync.so");
    if !shim.exists() {
        results.not_measured.push((
            "durability cost".into(),
            format!("{} is missing (scripts/bench builds it)", shim.display()),
        ));
        return Ok(None);
    }
    let s = &ctx.settings;
    let start = |name: &str, preload: bool| -> anyhow::Result<Daemon> {
        let mut env = ctx.env();
        if preload {
            env.push(("LD_PRELOAD".into(), shim.display().to_string()));
        }
        let dir = ctx.work.join(name);
        Daemon::start(
            &ctx.daemon_bin,
            &dir,
            DaemonConfig {
                coap_port: free_udp_port()?,
                mqtt_port: broker.port,
                inflight: s.inflight,
                commit_max_batch: s.commit_max_batch,
                store_path: dir.join("queue"),
                env,
                dtls: None,
                admin_port: Some(free_tcp_port()?),
                protocol: None,
                commands: false,
            },
        )
    };
    say("durability: CON at 64 devices with and without fsync (alternating)");
    let mut with = start("daemon-fsync", false)?;
    let mut without = start("daemon-nofsync", true)?;
    let mut cost = DurabilityCost {
        devices: 64,
        ..DurabilityCost::default()
    };
    for r in 0..s.repeats {
        for (daemon, fsync) in [(&with, true), (&without, false)] {
            let name = format!("durability{}r{r}", if fsync { "on" } else { "off" });
            let pid = daemon.pid().context("pid")?;
            let mark = Mark::now(pid);
            let rep = ctx.load(&[
                ("--target", daemon.coap_addr().to_string()),
                ("--devices", "64".into()),
                ("--duration", s.duration_s.to_string()),
                ("--payload", s.payload_bytes.to_string()),
                ("--path-prefix", format!("bench/{name}")),
            ])?;
            let mut run = ctx.e2e(sub, &name, rep);
            let usage = mark.since();
            run.daemon_cpu_us = usage.cpu_us;
            run.daemon_write_bytes = usage.write_bytes;
            match fsync {
                true => cost.with_fsync.push(run),
                false => cost.without_fsync.push(run),
            }
        }
    }
    cost.median_with = median(
        &cost
            .with_fsync
            .iter()
            .map(|r| r.e2e_rate)
            .collect::<Vec<_>>(),
    );
    cost.median_without = median(
        &cost
            .without_fsync
            .iter()
            .map(|r| r.e2e_rate)
            .collect::<Vec<_>>(),
    );
    if let Some(port) = with.config.admin_port {
        if let Some((p50, p99)) =
            histogram_quantiles(&metrics(port), "coap2mqtt_store_commit_seconds")
        {
            cost.commit_p50_us = (p50 * 1e6) as u64;
            cost.commit_p99_us = (p99 * 1e6) as u64;
        }
    }
    say(&format!(
        "  with fsync {:.0}/s, without {:.0}/s ({:.0}%); commit p50 <= {} µs, p99 <= {} µs",
        cost.median_with,
        cost.median_without,
        100.0 * cost.median_with / cost.median_without.max(1.0),
        cost.commit_p50_us,
        cost.commit_p99_us
    ));
    with.stop();
    without.stop();
    results.daemon_warnings.extend(with.warnings());
    Ok(Some(cost))
}

/// A daemon of this run's settings with `protocol` as `mqtt.protocol`.
fn comparison_daemon(
    ctx: &Ctx,
    broker: &Broker,
    name: &str,
    protocol: Option<&'static str>,
) -> anyhow::Result<Daemon> {
    let dir = ctx.work.join(name);
    Daemon::start(
        &ctx.daemon_bin,
        &dir,
        DaemonConfig {
            coap_port: free_udp_port()?,
            mqtt_port: broker.port,
            inflight: ctx.settings.inflight,
            commit_max_batch: ctx.settings.commit_max_batch,
            store_path: dir.join("queue"),
            env: ctx.env(),
            dtls: None,
            admin_port: None,
            protocol,
            commands: false,
        },
    )
}

/// Alternating CON 64 runs of two setups: each is a daemon, the path
/// prefix its devices post under (the run's name follows it) and whether
/// they send CBOR.
fn compare(
    ctx: &Ctx,
    broker: &Broker,
    sub: &Subscriber,
    setups: [(&Daemon, &str, &str, bool); 2],
) -> anyhow::Result<Comparison> {
    let s = &ctx.settings;
    let mut c = Comparison {
        a: setups[0].1.to_string(),
        b: setups[1].1.to_string(),
        devices: 64,
        ..Comparison::default()
    };
    for r in 0..s.repeats {
        for (i, (daemon, label, prefix, cbor)) in setups.iter().enumerate() {
            let name = format!("{label}r{r}");
            let mut args = vec![
                ("--target", daemon.coap_addr().to_string()),
                ("--devices", "64".to_string()),
                ("--duration", s.duration_s.to_string()),
                ("--payload", s.payload_bytes.to_string()),
                ("--path-prefix", format!("{prefix}/{name}")),
            ];
            if *cbor {
                args.push(("--cbor", String::new()));
            }
            let marks = (daemon.pid().map(Mark::now), broker.pid().map(Mark::now));
            let rep = ctx.load(&args)?;
            let mut run = ctx.e2e(sub, &name, rep);
            run.daemon_cpu_us = marks.0.map_or(0, |m| m.since().cpu_us);
            run.broker_cpu_us = marks.1.map_or(0, |m| m.since().cpu_us);
            match i {
                0 => c.a_runs.push(run),
                _ => c.b_runs.push(run),
            }
        }
    }
    let rates = |runs: &[E2eRun]| median(&runs.iter().map(|r| r.e2e_rate).collect::<Vec<_>>());
    c.median_a = rates(&c.a_runs);
    c.median_b = rates(&c.b_runs);
    say(&format!(
        "  {} {:.0}/s, {} {:.0}/s ({:.0}%)",
        c.a,
        c.median_a,
        c.b,
        c.median_b,
        100.0 * c.ratio()
    ));
    Ok(c)
}

/// MQTT 5, every publish with its properties, against MQTT 3.1.1.
fn mqtt_versions_phase(ctx: &Ctx, broker: &Broker, sub: &Subscriber) -> anyhow::Result<Comparison> {
    say("MQTT 5 against 3.1.1: CON at 64 devices (alternating)");
    let mut v5 = comparison_daemon(ctx, broker, "daemon-mqtt5", Some("5"))?;
    let mut v311 = comparison_daemon(ctx, broker, "daemon-mqtt311", Some("3.1.1"))?;
    let c = compare(
        ctx,
        broker,
        sub,
        [
            (&v5, "mqtt5", "bench", false),
            (&v311, "mqtt311", "bench", false),
        ],
    );
    v5.stop();
    v311.stop();
    c
}

/// CBOR translated to JSON (`payload = "json"`) against CBOR as it is.
fn payload_formats_phase(
    ctx: &Ctx,
    broker: &Broker,
    sub: &Subscriber,
) -> anyhow::Result<Comparison> {
    say("CBOR as JSON against CBOR as it is: CON at 64 devices (alternating)");
    let mut daemon = comparison_daemon(ctx, broker, "daemon-formats", None)?;
    let c = compare(
        ctx,
        broker,
        sub,
        [
            (&daemon, "cborjson", "json", true),
            (&daemon, "cborraw", "bench", true),
        ],
    );
    daemon.stop();
    c
}

/// Commands pushed to the 64 devices of a CON closed loop at a fixed rate
/// (each device is awake: it posts, and the gateway pushes its command
/// right after the 2.04), against the same load without commands, in
/// alternating runs. After each run with commands a short unmeasured load
/// delivers what is still pending, so the next run without starts empty.
fn commands_phase(ctx: &Ctx, broker: &Broker, sub: &Subscriber) -> anyhow::Result<CommandsPhase> {
    const OFFERED: f64 = 200.0;
    say(&format!(
        "Commands pushed to 64 awake devices at {OFFERED:.0}/s under CON 64 load (alternating with none)"
    ));
    let s = &ctx.settings;
    let dir = ctx.work.join("daemon-commands");
    let mut daemon = Daemon::start(
        &ctx.daemon_bin,
        &dir,
        DaemonConfig {
            coap_port: free_udp_port()?,
            mqtt_port: broker.port,
            inflight: s.inflight,
            commit_max_batch: s.commit_max_batch,
            store_path: dir.join("queue"),
            env: ctx.env(),
            dtls: None,
            admin_port: None,
            protocol: None,
            commands: true,
        },
    )?;
    // The subscription is made after the CONNACK.
    std::thread::sleep(Duration::from_secs(1));
    let target = daemon.coap_addr().to_string();
    let load = |name: &str, duration: f64| {
        ctx.load(&[
            ("--target", target.clone()),
            ("--devices", "64".to_string()),
            ("--duration", duration.to_string()),
            ("--payload", s.payload_bytes.to_string()),
            ("--path-prefix", format!("bench/{name}")),
        ])
    };
    let mut phase = CommandsPhase {
        offered_per_s: OFFERED,
        uplink: Comparison {
            a: "with commands".into(),
            b: "without".into(),
            devices: 64,
            ..Comparison::default()
        },
        ..CommandsPhase::default()
    };
    let mut delivered = Vec::new();
    for r in 0..s.repeats {
        let name = format!("nocmdr{r}");
        let rep = load(&name, s.duration_s)?;
        phase.uplink.b_runs.push(ctx.e2e(sub, &name, rep));

        let name = format!("cmdr{r}");
        let commander = {
            let _guard = ctx.rt.enter();
            Commander::start(broker.port, "bench", 64, OFFERED)
        };
        let rep = load(&name, s.duration_s);
        let published = ctx.rt.block_on(commander.stop());
        let rep = rep?;
        phase.runs.push((published, rep.commands_received));
        delivered.push((
            rep.commands_received as f64 / rep.window_s.max(1e-9),
            rep.command_latency_us.clone(),
        ));
        phase.uplink.a_runs.push(ctx.e2e(sub, &name, rep));
        // Deliver what is still pending.
        load(&format!("cmdflush{r}"), 3.0)?;
    }
    let rates: Vec<f64> = delivered.iter().map(|(r, _)| *r).collect();
    phase.delivered_per_s = median(&rates);
    if let Some((_, latency)) = delivered.iter().min_by(|a, b| {
        (a.0 - phase.delivered_per_s)
            .abs()
            .total_cmp(&(b.0 - phase.delivered_per_s).abs())
    }) {
        phase.latency_p50_us = latency.p50;
        phase.latency_p99_us = latency.p99;
    }
    let rates = |runs: &[E2eRun]| median(&runs.iter().map(|r| r.e2e_rate).collect::<Vec<_>>());
    phase.uplink.median_a = rates(&phase.uplink.a_runs);
    phase.uplink.median_b = rates(&phase.uplink.b_runs);
    say(&format!(
        "  delivered {:.0}/s (p50 {} µs, p99 {} µs); uplink {:.0}/s with, {:.0}/s without ({:.0}%)",
        phase.delivered_per_s,
        phase.latency_p50_us,
        phase.latency_p99_us,
        phase.uplink.median_a,
        phase.uplink.median_b,
        100.0 * phase.uplink.ratio()
    ));
    daemon.stop();
    Ok(phase)
}

/// 100,000 spoofed ClientHellos, each from its own source, against a fresh
/// DTLS daemon while one real DTLS device posts CON: what the flood costs
/// in RSS, and whether the device is served.
fn hello_flood(ctx: &Ctx, broker: &Broker) -> anyhow::Result<HelloFlood> {
    const HELLOS: u32 = 100_000;
    say(&format!(
        "{HELLOS} spoofed ClientHellos from distinct sources, one real DTLS device posting"
    ));
    let (mut daemon, dtls) = dtls_daemon(ctx, broker.port, "daemon-flood")?;
    let pid = daemon.pid().context("daemon pid")?;
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_bytes(pid).unwrap_or(0);
    let started = Instant::now();
    let flood = std::thread::spawn(move || coap2mqtt_bench::hello::flood(dtls, HELLOS));
    let device = ctx.load(&[
        ("--target", dtls.to_string()),
        ("--devices", "1".to_string()),
        // A device posting at a steady 100/s, not flat out: what it is
        // owed (its Message IDs remembered for EXCHANGE_LIFETIME, ~60 bytes
        // each) would otherwise be the growth measured, not the flood's.
        ("--rate", "100".to_string()),
        ("--duration", "5".to_string()),
        ("--payload", ctx.settings.payload_bytes.to_string()),
        ("--path-prefix", "bench/flooddevice".to_string()),
        ("--psk-identity-prefix", PSK_PREFIX.to_string()),
        ("--psk-key-hex", PSK_HEX.to_string()),
    ])?;
    let sent = flood
        .join()
        .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?;
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss_bytes(pid).unwrap_or(0);
    let f = HelloFlood {
        hellos: sent,
        seconds,
        rss_before,
        rss_after,
        device_ok: device.ok,
        device_sent: device.sent,
    };
    say(&format!(
        "  {} hellos in {:.1} s; RSS {:.1} -> {:.1} MB; the device: {} of {} answered 2.04",
        f.hellos,
        f.seconds,
        rss_before as f64 / 1e6,
        rss_after as f64 / 1e6,
        f.device_ok,
        f.device_sent
    ));
    daemon.stop();
    Ok(f)
}

/// The deduplication table's heap per entry, from its own binary.
fn dedup_footprint(ctx: &Ctx) -> Option<DedupFootprint> {
    let bin = ctx.load_bin.with_file_name("dedup-footprint");
    let out = Command::new(&bin).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let f = DedupFootprint {
        entries: v["entries"].as_u64()?,
        bytes_per_entry_64_peers: v["bytes_per_entry_64_peers"].as_f64()?,
        bytes_per_entry_one_per_peer: v["bytes_per_entry_one_per_peer"].as_f64()?,
    };
    say(&format!(
        "dedup table: {:.1} bytes an entry (64 peers), {:.1} (one entry per peer)",
        f.bytes_per_entry_64_peers, f.bytes_per_entry_one_per_peer
    ));
    Some(f)
}

/// Identities `bench-dev-0` .. of the DTLS devices, all with this key.
const PSK_PREFIX: &str = "bench-dev-";
const PSK_HEX: &str = "000102030405060708090a0b0c0d0e0f";
/// The idle-session counts the targets name.
const IDLE_SESSIONS: [usize; 2] = [1_000, 10_000];

/// A daemon with a DTLS-PSK listener and a PSK file for every device.
fn dtls_daemon(ctx: &Ctx, broker_port: u16, name: &str) -> anyhow::Result<(Daemon, SocketAddr)> {
    let dir = ctx.work.join(name);
    std::fs::create_dir_all(&dir)?;
    let psk_file = dir.join("psk.toml");
    let devices = IDLE_SESSIONS.iter().copied().max().unwrap_or(0);
    let mut text = String::from("[psk]\n");
    for i in 0..devices {
        text.push_str(&format!("\"{PSK_PREFIX}{i}\" = \"hex:{PSK_HEX}\"\n"));
    }
    std::fs::write(&psk_file, text)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&psk_file, std::fs::Permissions::from_mode(0o600))?;
    }
    let listener = DtlsListener {
        port: free_udp_port()?,
        psk_file,
    };
    let addr = listener.addr();
    let daemon = Daemon::start(
        &ctx.daemon_bin,
        &dir,
        DaemonConfig {
            coap_port: free_udp_port()?,
            mqtt_port: broker_port,
            inflight: ctx.settings.inflight,
            commit_max_batch: ctx.settings.commit_max_batch,
            store_path: dir.join("queue"),
            env: ctx.env(),
            dtls: Some(listener),
            admin_port: None,
            protocol: None,
            commands: false,
        },
    )?;
    Ok((daemon, addr))
}

/// DTLS-PSK CON end to end at each concurrency (one session per device),
/// then, each on a fresh daemon, the RSS cost of 1,000 and 10,000 idle
/// sessions and the handshake rate that set them up.
fn dtls_phase(ctx: &Ctx, broker: &Broker, sub: &Subscriber) -> anyhow::Result<DtlsPhase> {
    let s = &ctx.settings;
    let mut phase = DtlsPhase::default();
    let (mut daemon, dtls) = dtls_daemon(ctx, broker.port, "daemon-dtls")?;
    for &c in &s.concurrencies {
        let mut runs = Vec::new();
        for r in 0..s.repeats {
            let run_name = format!("dtls{c}r{r}");
            let marks = (daemon.pid().map(Mark::now), broker.pid().map(Mark::now));
            let rep = ctx.load(&[
                ("--target", dtls.to_string()),
                ("--devices", c.to_string()),
                ("--duration", s.duration_s.to_string()),
                ("--payload", s.payload_bytes.to_string()),
                ("--path-prefix", format!("bench/{run_name}")),
                ("--psk-identity-prefix", PSK_PREFIX.to_string()),
                ("--psk-key-hex", PSK_HEX.to_string()),
            ])?;
            let mut run = ctx.e2e(sub, &run_name, rep);
            run.daemon_cpu_us = marks.0.map_or(0, |m| m.since().cpu_us);
            run.broker_cpu_us = marks.1.map_or(0, |m| m.since().cpu_us);
            runs.push(run);
        }
        let point = ThroughputPoint::of("DTLS CON", c, runs);
        say(&format!(
            "DTLS CON c={c}: e2e {:.0}/s, coap {:.0}/s, p99 {} µs (missing {}, handshake failures {})",
            point.median_e2e,
            point.median_coap,
            point.latency_us.p99,
            point.runs[0].missing,
            point.runs[0].load.connect_failures
        ));
        phase.throughput.push(point);
    }
    daemon.stop();
    drop(daemon);

    phase.flood = Some(hello_flood(ctx, broker)?);

    for sessions in IDLE_SESSIONS {
        let (mut daemon, dtls) = dtls_daemon(ctx, broker.port, &format!("daemon-idle-{sessions}"))?;
        let pid = daemon.pid().context("daemon pid")?;
        std::thread::sleep(Duration::from_secs(1));
        let rss_before = rss_bytes(pid).unwrap_or(0);
        let mut holder = Command::new(&ctx.load_bin)
            .args([
                "--target",
                &dtls.to_string(),
                "--devices",
                &sessions.to_string(),
            ])
            .args([
                "--psk-identity-prefix",
                PSK_PREFIX,
                "--psk-key-hex",
                PSK_HEX,
            ])
            .args(["--idle-hold", "8", "--path-prefix", "bench/idle"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting coap-load")?;
        // Wait for "connected N devices", then let the sessions settle.
        let stderr = holder.stderr.take().context("coap-load stderr")?;
        let mut connected_line = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line?;
            if line.contains("connected ") {
                connected_line = line;
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(3));
        let rss_with_sessions = rss_bytes(pid).unwrap_or(0);
        let out = holder.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "coap-load holding {sessions} sessions failed ({connected_line})"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let rep: LoadReport = serde_json::from_value(v["report"].clone())?;
        let idle = IdleSessions {
            sessions,
            connected: rep.connected,
            failed: rep.connect_failures,
            connect_s: rep.connect_s,
            handshakes_per_s: rep.connected as f64 / rep.connect_s.max(1e-9),
            rss_before,
            rss_with_sessions,
        };
        say(&format!(
            "{sessions} idle DTLS sessions: {} connected ({} failed) at {:.0} handshakes/s; RSS {:.1} -> {:.1} MB",
            idle.connected,
            idle.failed,
            idle.handshakes_per_s,
            rss_before as f64 / 1e6,
            rss_with_sessions as f64 / 1e6
        ));
        phase.idle.push(idle);
        daemon.stop();
    }
    Ok(phase)
}

/// Queue `drain_messages` with the broker down, then start it and time the
/// drain at the subscriber.
fn drain_phase(ctx: &Ctx, results: &mut Results) -> anyhow::Result<Drain> {
    let s = &ctx.settings;
    let n = s.drain_messages;
    let port = free_tcp_port()?;
    // The subscriber's session must exist before the daemon can publish:
    // start the broker (with persistence), subscribe persistently, stop it.
    let mut broker = Broker::start(port, &ctx.work.join("broker-drain"), true)?;
    let sub = ctx.rt.block_on(Subscriber::start(
        port,
        "bench-sub-drain",
        &["bench/#"],
        true,
    ))?;
    broker.stop();

    let dir = ctx.work.join("daemon-drain");
    let store = dir.join("queue");
    let mut daemon = Daemon::start(
        &ctx.daemon_bin,
        &dir,
        DaemonConfig {
            coap_port: free_udp_port()?,
            mqtt_port: port,
            inflight: s.inflight,
            commit_max_batch: s.commit_max_batch,
            store_path: store.clone(),
            env: ctx.env(),
            dtls: None,
            admin_port: None,
            protocol: None,
            commands: false,
        },
    )?;
    let sampler = RssSampler::start(daemon.pid().context("pid")?);
    say(&format!(
        "drain: queueing {n} messages with the broker down"
    ));
    let fill = ctx.load(&[
        ("--target", daemon.coap_addr().to_string()),
        ("--devices", "64".into()),
        ("--count", n.to_string()),
        ("--duration", "3600".into()),
        ("--payload", s.payload_bytes.to_string()),
        ("--path-prefix", "bench/drain".into()),
    ])?;
    say(&format!(
        "  queued {} at {:.0}/s",
        fill.ok, fill.rate_ok_per_s
    ));
    let (disk_full, _) = disk_usage(&store);
    sampler.take_peak();
    let drain_mark = Mark::now(daemon.pid().context("pid")?);
    // The span of the daemon's figures, for the cores in use (the broker's
    // mark can only start once it runs again).
    let span = Instant::now();
    broker.restart()?;
    let broker_up = unix_us();
    let others = (broker.pid().map(Mark::now), Mark::now(std::process::id()));
    let got = ctx.rt.block_on(sub.wait_for(
        "bench/drain",
        fill.ok,
        Duration::from_secs(10),
        Duration::from_secs(1800),
    ));
    let rss_peak_drain = sampler.take_peak();
    // The acks ride with the next write or a 200 ms timer: let them land.
    std::thread::sleep(Duration::from_secs(2));
    let drain_usage = drain_mark.since();
    let broker_cpu_us = others.0.map_or(0, |m| m.since().cpu_us);
    let driver_cpu_us = others.1.since().cpu_us;
    let span_s = span.elapsed().as_secs_f64();
    let (disk_after, _) = disk_usage(&store);
    drop(sampler);
    daemon.stop();
    let depth_at_stop = stopped_depth(&dir.join("daemon.log"));
    let (disk_stop, _) = disk_usage(&store);
    results.daemon_warnings.extend(daemon.warnings());
    ctx.rt.block_on(sub.disconnect());
    drop(broker);
    let drain_seconds = got.last_unix_us.saturating_sub(got.first_unix_us) as f64 / 1e6;
    let d = Drain {
        messages: n,
        fill_rate: fill.rate_ok_per_s,
        delivered: got.distinct,
        duplicates: got.duplicates,
        out_of_order: got.out_of_order,
        drain_seconds,
        drain_rate: if drain_seconds > 0.0 {
            got.distinct as f64 / drain_seconds
        } else {
            0.0
        },
        time_to_empty_s: got.last_unix_us.saturating_sub(broker_up) as f64 / 1e6,
        disk_full_bytes: disk_full,
        disk_after_drain_bytes: disk_after,
        disk_after_stop_bytes: disk_stop,
        shrank: disk_stop < disk_full,
        depth_at_stop,
        rss_peak_drain,
        write_bytes_per_message: drain_usage.write_bytes as f64 / got.distinct.max(1) as f64,
        cpu_us_per_message: drain_usage.cpu_us as f64 / got.distinct.max(1) as f64,
        broker_cpu_us_per_message: broker_cpu_us as f64 / got.distinct.max(1) as f64,
        driver_cpu_us_per_message: driver_cpu_us as f64 / got.distinct.max(1) as f64,
        cores: (drain_usage.cpu_us + broker_cpu_us + driver_cpu_us) as f64 / 1e6 / span_s.max(1e-3),
        fill,
    };
    say(&format!(
        "  drained {} of {} in {:.2} s ({:.0}/s); empty {:.2} s after the broker came up; disk {} -> {} bytes; {:.1} bytes written and {:.1} µs CPU per message",
        d.delivered, d.fill.ok, d.drain_seconds, d.drain_rate, d.time_to_empty_s, disk_full, disk_stop, d.write_bytes_per_message, d.cpu_us_per_message
    ));
    Ok(d)
}

/// Queue `queued_messages` with no broker, read RSS and disk, restart and
/// time start to ready.
fn queued_phase(ctx: &Ctx, results: &mut Results) -> anyhow::Result<Queued> {
    let s = &ctx.settings;
    let n = s.queued_messages;
    let dir = ctx.work.join("daemon-queued");
    let store = dir.join("queue");
    let mut daemon = Daemon::start(
        &ctx.daemon_bin,
        &dir,
        DaemonConfig {
            coap_port: free_udp_port()?,
            mqtt_port: free_tcp_port()?,
            inflight: s.inflight,
            commit_max_batch: s.commit_max_batch,
            store_path: store.clone(),
            env: ctx.env(),
            dtls: None,
            admin_port: None,
            protocol: None,
            commands: false,
        },
    )?;
    let pid = daemon.pid().context("pid")?;
    let sampler = RssSampler::start(pid);
    say(&format!("queued: queueing {n} messages with no broker"));
    let mark = Mark::now(pid);
    let mut rss_by_depth = vec![(0, rss_bytes(pid).unwrap_or(0))];
    let mut queued = 0u64;
    let mut fill = LoadReport::default();
    for step in [
        100_000u64, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000,
    ] {
        let to = step.min(n);
        if to <= queued {
            continue;
        }
        let part = ctx.load(&[
            ("--target", daemon.coap_addr().to_string()),
            ("--devices", "64".into()),
            ("--count", (to - queued).to_string()),
            ("--duration", "3600".into()),
            ("--payload", s.payload_bytes.to_string()),
            ("--path-prefix", format!("bench/queued{to}")),
        ])?;
        queued += part.ok;
        fill.ok += part.ok;
        fill.window_s += part.window_s;
        std::thread::sleep(Duration::from_secs(1));
        let rss = rss_bytes(pid).unwrap_or(0);
        say(&format!(
            "  {queued} queued: RSS {:.1} MB",
            rss as f64 / 1e6
        ));
        rss_by_depth.push((queued, rss));
    }
    fill.rate_ok_per_s = fill.ok as f64 / fill.window_s.max(1e-9);
    let fill_usage = mark.since();
    let rss_peak_fill = sampler.take_peak();
    drop(sampler);
    let rss_after_fill = rss_bytes(pid).unwrap_or(0);
    let (disk, apparent) = disk_usage(&store);
    daemon.restart()?;
    let ready = daemon.ready_after.as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after_restart = daemon.pid().and_then(rss_bytes).unwrap_or(0);
    daemon.stop();
    results.daemon_warnings.extend(
        daemon
            .warnings()
            .into_iter()
            .filter(|w| !w.contains("cannot connect")),
    );
    let q = Queued {
        messages: fill.ok,
        fill_rate: fill.rate_ok_per_s,
        rss_peak_fill,
        rss_after_fill,
        rss_after_restart,
        ready_after_restart_s: ready,
        disk_bytes: disk,
        disk_apparent_bytes: apparent,
        bytes_per_message: disk as f64 / fill.ok.max(1) as f64,
        rss_by_depth,
        write_bytes_per_message: fill_usage.write_bytes as f64 / fill.ok.max(1) as f64,
        cpu_us_per_message: fill_usage.cpu_us as f64 / fill.ok.max(1) as f64,
        fill,
    };
    say(&format!(
        "  {} queued at {:.0}/s; RSS {:.1} MB after fill, {:.1} MB after restart; ready in {:.3} s; {:.0} bytes/message on disk, {:.1} bytes written per message",
        q.messages,
        q.fill_rate,
        q.rss_after_fill as f64 / 1e6,
        q.rss_after_restart as f64 / 1e6,
        q.ready_after_restart_s,
        q.bytes_per_message,
        q.write_bytes_per_message
    ));
    Ok(q)
}

/// The depth in the daemon's "stopped; N messages stay queued" line.
fn stopped_depth(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("messages stay queued"))?;
    let after = line.split("stopped; ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

impl Ctx {
    fn env(&self) -> Vec<(String, String)> {
        self.cli
            .daemon_env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Runs coap-load with `args` and returns its report.
    fn load(&self, args: &[(&str, String)]) -> anyhow::Result<LoadReport> {
        let mut cmd = Command::new(&self.load_bin);
        for (k, v) in args {
            // A flag without a value is passed with an empty one.
            cmd.arg(k);
            if !v.is_empty() {
                cmd.arg(v);
            }
        }
        let before = procfs::children_cpu_us();
        let out = cmd.output().context("running coap-load")?;
        let cpu_us = procfs::children_cpu_us().saturating_sub(before);
        anyhow::ensure!(
            out.status.success(),
            "coap-load {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let mut report: LoadReport = serde_json::from_value(v["report"].clone())?;
        report.cpu_us = cpu_us;
        Ok(report)
    }

    /// Waits for the subscriber to see run `name`'s messages and combines
    /// both views.
    fn e2e(&self, sub: &Subscriber, name: &str, load: LoadReport) -> E2eRun {
        let key = format!("bench/{name}");
        let got = self.rt.block_on(sub.wait_for(
            &key,
            load.ok,
            Duration::from_secs(5),
            Duration::from_secs(300),
        ));
        // Deliveries within the load window, as for the device side.
        let window_end = load.started_unix_us + (load.window_s * 1e6) as u64;
        let in_window = got.delivered_by(window_end);
        E2eRun {
            run: name.into(),
            delivered: got.distinct,
            duplicates: got.duplicates,
            out_of_order: got.out_of_order,
            missing: load.ok as i64 - got.distinct as i64,
            e2e_rate: in_window as f64 / load.window_s.max(1e-9),
            rcvbuf_errors: 0,
            coap_rate: load.rate_ok_per_s,
            daemon_cpu_us: 0,
            broker_cpu_us: 0,
            daemon_write_bytes: 0,
            subscriber_cpu_us: 0,
            load,
        }
    }
}
