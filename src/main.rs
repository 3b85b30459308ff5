//! The `coap2mqtt` command line. Everything it does lives in the library.

use clap::{CommandFactory, Parser, Subcommand};
use coap2mqtt::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/coap2mqtt/coap2mqtt.toml";

#[derive(Parser)]
#[command(
    name = "coap2mqtt",
    version,
    about = "CoAP/UDP gateway that stores every message durably and forwards it to MQTT with QoS 1"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the daemon.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a configuration file; exit 0 when valid, 2 otherwise.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask the running daemon how it is doing (its admin endpoint); exit 0
    /// when healthy, 1 when not, 2 when it cannot be reached.
    Status {
        /// The configuration file, for admin.listen.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The admin endpoint's address, instead of the config's.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// Write the man page (roff) to stdout.
    #[command(hide = true)]
    Manpage,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Status { config, admin } => coap2mqtt::admin::status_command(&config, admin),
        Commands::Manpage => {
            let man = clap_mangen::Man::new(Cli::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Commands::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            coap2mqtt::logging::init(config.log.level);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("coap2mqtt")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(coap2mqtt::daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
