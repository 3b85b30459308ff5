//! `powercut-fs [--tear SEED] MOUNTPOINT`: mounts an empty powercut
//! filesystem for shell use and manual checks.
//!
//! - SIGUSR1 cuts the power (every unsynced write lost; with `--tear SEED`,
//!   a seeded prefix of each file's unsynced writes survives, the seed
//!   advanced by one per cut);
//! - SIGUSR2 revives (the reboot);
//! - SIGTERM or SIGINT prints the counters and unmounts.
//!
//! Example: `powercut-fs /mnt/pc & pid=$!; ...; kill -USR1 $pid; kill -USR2 $pid`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use powercut_fs::CutMode;

const USAGE: &str = "usage: powercut-fs [--tear SEED] MOUNTPOINT\n\
    SIGUSR1: power cut; SIGUSR2: revive; SIGTERM/SIGINT: print counters and unmount";

fn parse(args: &[OsString]) -> Result<(PathBuf, Option<u64>), String> {
    match args {
        [path] if path != "-h" && path != "--help" => Ok((PathBuf::from(path), None)),
        [flag, seed, path] if flag == "--tear" => {
            let seed = seed
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| format!("--tear needs a number, got {seed:?}"))?;
            Ok((PathBuf::from(path), Some(seed)))
        }
        _ => Err(USAGE.to_string()),
    }
}

/// The signals this program waits for, blocked in every thread so that only
/// `sigwait` below receives them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls
    // only read and write that set and this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let (path, tear_seed) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // Before the FUSE thread starts, so that it inherits the mask.
    let signals = block_signals();
    let fs = match powercut_fs::mount(&path) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "powercut-fs: pid {} mounted at {}; SIGUSR1 cuts, SIGUSR2 revives, SIGTERM unmounts",
        std::process::id(),
        path.display()
    );
    let mut cuts = 0u64;
    loop {
        let mut sig = 0;
        // SAFETY: waits for one of the signals blocked above.
        if unsafe { libc::sigwait(&signals, &mut sig) } != 0 {
            continue;
        }
        match sig {
            libc::SIGUSR1 => {
                let mode = match tear_seed {
                    Some(seed) => CutMode::Tear {
                        seed: seed.wrapping_add(cuts),
                    },
                    None => CutMode::LoseAll,
                };
                cuts += 1;
                fs.cut(mode);
                eprintln!("powercut-fs: cut ({mode:?}); dead until SIGUSR2");
            }
            libc::SIGUSR2 => {
                fs.revive();
                eprintln!("powercut-fs: revived");
            }
            _ => break,
        }
    }
    println!("{}", fs.counters());
    drop(fs);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments_are_a_mountpoint_and_an_optional_tear_seed() {
        assert_eq!(parse(&args(&["/m"])), Ok((PathBuf::from("/m"), None)));
        assert_eq!(
            parse(&args(&["--tear", "7", "/m"])),
            Ok((PathBuf::from("/m"), Some(7)))
        );
        assert!(parse(&args(&["--tear", "x", "/m"])).is_err());
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["--help"])).is_err());
    }
}
