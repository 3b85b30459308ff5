//! The `coap2mqtt` command line. Everything it does lives in the library.

use clap::{CommandFactory, Parser, Subcommand};
use coap2mqtt::config::exposure::PlainCoap;
use coap2mqtt::config::{Config, ConfigErrors};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/coap2mqtt/coap2mqtt.toml";
const DEFAULT_PSK_FILE: &str = "/etc/coap2mqtt/psk.toml";
const EXAMPLE_CONFIG: &str = "/usr/share/doc/coap2mqtt/examples/coap2mqtt.toml";

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
    /// List the devices the running daemon has heard from (its admin
    /// endpoint's GET /devices): the most recently heard from first.
    Devices {
        /// The configuration file, for admin.listen.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The admin endpoint's address, instead of the config's.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// The endpoint's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only devices not heard from for at least this long ("90s",
        /// "15m", "1h", "2days").
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        quiet_for: Option<std::time::Duration>,
    },
    /// Dead letters: messages the broker kept refusing. List and show them,
    /// put them back at the tail of the queue, or delete them, through the
    /// daemon's admin socket (root and the group coap2mqtt only). Exit 0
    /// when done, 1 when the daemon refused (e.g. an unknown id), 2 when it
    /// cannot be reached.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
        /// The configuration file, for admin.socket.
        #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The admin socket, instead of the config's admin.socket.
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Write the man page (roff) to stdout.
    #[command(hide = true)]
    Manpage,
    /// Write the shell completions for bash, zsh or fish to stdout (the
    /// package installs them).
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Manage the DTLS pre-shared keys of devices.
    Psk {
        #[command(subcommand)]
        command: PskCommand,
    },
}

#[derive(Subcommand)]
enum PskCommand {
    /// Add a device with a new random key; prints the key once (in hex,
    /// or as text with --ascii) on stdout, and how clients take it on stderr.
    Add {
        /// The device's PSK identity, e.g. sensor-01 (tinydtls takes at most
        /// 32 bytes).
        identity: String,
        /// The key's length in bytes: 16 (AES-128 strength, the most
        /// tinydtls takes) unless given.
        #[arg(long, default_value_t = coap2mqtt::config::psk::GENERATED_KEY_BYTES)]
        bytes: usize,
        /// A key of letters and digits whose ASCII codes are the key (about
        /// 5.95 bits per byte), for clients that take a key only as text,
        /// such as libcoap's coap-client before 4.3.5.
        #[arg(long)]
        ascii: bool,
        #[command(flatten)]
        file: PskFileArgs,
    },
    /// List the identities in the PSK file (never the keys).
    List {
        #[command(flatten)]
        file: PskFileArgs,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// Every dead letter, oldest first: id, when it died (UTC), payload
    /// size, topic, why.
    List,
    /// One dead letter whole: its payload as text when it is UTF-8, else
    /// in base64.
    Show {
        /// The dead letter's id, as `list` shows it.
        id: u64,
    },
    /// Put dead letters back at the tail of the queue, to be published
    /// again after everything already queued.
    Requeue {
        /// The ids of the dead letters.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good.
    Purge {
        /// The ids of the dead letters.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args)]
struct PskFileArgs {
    /// The PSK file. Default: dtls.psk_file of the config, else /etc/coap2mqtt/psk.toml.
    #[arg(long)]
    psk_file: Option<PathBuf>,
    /// The configuration file naming the PSK file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

impl PskFileArgs {
    /// --psk-file, else the config's dtls.psk_file (if the config can be
    /// read), else the packaged default.
    fn path(&self) -> PathBuf {
        if let Some(path) = &self.psk_file {
            return path.clone();
        }
        Config::load(&self.config)
            .ok()
            .and_then(|c| c.dtls.psk_file)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PSK_FILE))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Status { config, admin } => coap2mqtt::admin::status_command(&config, admin),
        Commands::Devices {
            config,
            admin,
            json,
            quiet_for,
        } => coap2mqtt::admin::devices_command(&config, admin, json, quiet_for),
        Commands::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "coap2mqtt",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
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
            Ok(c) => {
                println!("{}: OK", config.display());
                // Valid, but worth a second look before the daemon says it.
                let plain = PlainCoap::judge(&c.coap.listen, &c.routes);
                if plain.level() == log::Level::Warn {
                    eprintln!("warning: {}", plain.describe(&config));
                }
                ExitCode::SUCCESS
            }
            Err(errors) => config_refused(&config, &errors),
        },
        Commands::Psk { command } => psk(command),
        Commands::DeadLetters {
            command,
            config,
            socket,
            json,
        } => dead_letters(command, &config, socket, json),
        Commands::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(errors) => return config_refused(&config, &errors),
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

/// Prints a config's problems, one per line, then what to do; exit 2.
fn config_refused(path: &Path, errors: &ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    if std::fs::File::open(path).is_err() {
        eprintln!(
            "  Give the configuration file with --config FILE (as a user who may read it); \
             the package's example is {EXAMPLE_CONFIG}."
        );
    } else {
        eprintln!(
            "  Fix the lines above, then check the file with: coap2mqtt check-config --config {}",
            path.display()
        );
    }
    ExitCode::from(2)
}

/// What to do when the PSK file cannot be read or written.
const PSK_FILE_HINT: &str = "  Give the PSK file with --psk-file FILE, or the config naming it \
    (dtls.psk_file) with --config FILE; the packaged file needs root to change.";

fn psk(command: PskCommand) -> ExitCode {
    use coap2mqtt::config::psk::{self, AddError};
    match command {
        PskCommand::Add {
            identity,
            bytes,
            ascii,
            file,
        } => {
            let form = match ascii {
                true => psk::KeyForm::Ascii(bytes),
                false => psk::KeyForm::Random(bytes),
            };
            match psk::add(&file.path(), &identity, form) {
                Ok(key) => {
                    println!("{}", key.shown);
                    eprintln!("{}", psk::usage(&identity, &key));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    match e {
                        AddError::Io { .. } => {
                            eprintln!("{PSK_FILE_HINT}");
                            ExitCode::FAILURE
                        }
                        AddError::Invalid { .. } => {
                            eprintln!("{PSK_FILE_HINT}");
                            ExitCode::from(2)
                        }
                        _ => ExitCode::from(2),
                    }
                }
            }
        }
        PskCommand::List { file } => {
            let path = file.path();
            match psk::load(&path) {
                Ok(keys) => {
                    for identity in keys.iter().flat_map(|k| k.identities()) {
                        println!("{identity}");
                    }
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("{PSK_FILE_HINT}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn dead_letters(
    command: DeadLetterCommand,
    config: &Path,
    socket: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    use coap2mqtt::admin::{dead_letters, protocol::Plan};
    use coap2mqtt::store::{Action, Which};
    let which = |ids: Vec<u64>, all: bool| match all {
        true => Which::All,
        false => Which::Ids(ids),
    };
    let plan = match command {
        DeadLetterCommand::List => Plan::List {
            limit: coap2mqtt::store::DEAD_LETTER_CAPACITY,
        },
        DeadLetterCommand::Show { id } => Plan::Show { id },
        DeadLetterCommand::Requeue { ids, all } => Plan::Decide {
            action: Action::Requeue,
            which: which(ids, all),
        },
        DeadLetterCommand::Purge { ids, all } => Plan::Decide {
            action: Action::Purge,
            which: which(ids, all),
        },
    };
    match dead_letters::socket_path(config, socket) {
        Ok(path) => dead_letters::command(&path, plan, json),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
