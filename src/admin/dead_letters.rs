//! `coap2mqtt dead-letters`: the operator's side of the admin socket. Sends
//! one request, prints the answer for a person (or as JSON with `--json`).
//!
//! Exit codes: 0 done; 1 the daemon refused (an unknown id, a full queue:
//! the message says which); 2 the daemon could not be asked (no socket, no
//! permission, a config that cannot be read).

use super::protocol::{self, Answer, Letter, Plan};
use crate::store::{Action, Which};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The largest answer read (a `show` of a large payload, or a long list).
const MAX_ANSWER: u64 = 256 << 20;
/// A requeue of thousands of letters takes a few syncs; a minute is plenty.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the socket is: `socket` when given, else the config's
/// `admin.socket`.
pub fn socket_path(config: &Path, socket: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = socket {
        return Ok(path);
    }
    match crate::config::Config::load(config) {
        Ok(c) => c.admin.socket.ok_or_else(|| {
            format!(
                "{}: admin.socket is \"\": the daemon has no admin socket.\n  Set admin.socket \
                 (e.g. \"/run/coap2mqtt/admin.sock\") and restart the daemon, or give the socket \
                 with --socket PATH.",
                config.display()
            )
        }),
        Err(errors) => Err(format!(
            "{errors}\n  `coap2mqtt dead-letters` reads the socket's path (admin.socket) from the \
             daemon's config: give it with --config FILE, or give the socket with --socket PATH."
        )),
    }
}

/// Asks the daemon on `socket` and prints the answer.
pub fn command(socket: &Path, plan: Plan, json: bool) -> ExitCode {
    let answer = match ask(socket, &plan) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !answer.ok {
        eprintln!(
            "{}",
            answer
                .error
                .as_deref()
                .unwrap_or("refused, without a reason")
        );
        return ExitCode::from(1);
    }
    let mut out = std::io::stdout().lock();
    let printed = match json {
        true => print_json(&mut out, &answer),
        false => print_text(&mut out, &plan, &answer),
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        // stdout closed (e.g. `| head`): nothing more to say.
        Err(_) => ExitCode::SUCCESS,
    }
}

/// One request, one answer.
pub fn ask(socket: &Path, plan: &Plan) -> Result<Answer, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, &e))?;
    let _ = stream.set_read_timeout(Some(ANSWER_TIMEOUT));
    let _ = stream.set_write_timeout(Some(ANSWER_TIMEOUT));
    stream
        .write_all(protocol::request_line(plan).as_bytes())
        .map_err(|e| format!("{}: sending the request: {e}", socket.display()))?;
    let mut line = Vec::new();
    BufReader::new(std::io::Read::take(&stream, MAX_ANSWER))
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("{}: reading the answer: {e}", socket.display()))?;
    serde_json::from_slice(&line).map_err(|e| {
        format!(
            "{}: the daemon's answer is not understood ({e}); is it the same version as this \
             command?",
            socket.display()
        )
    })
}

fn connect_error(socket: &Path, e: &std::io::Error) -> String {
    let what_to_do = match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "only root and members of the group {} may use it: run the command with sudo, or \
             add yourself to the group (and log in again)",
            super::socket::GROUP
        ),
        _ => "is the daemon running (`systemctl status coap2mqtt` tells)? If its socket is \
              elsewhere, give the daemon's config with --config FILE or the socket with \
              --socket PATH"
            .to_string(),
    };
    format!(
        "cannot reach the daemon's admin socket {}: {e}\n  {what_to_do}.",
        socket.display()
    )
}

fn print_json(out: &mut impl Write, answer: &Answer) -> std::io::Result<()> {
    let value = match (&answer.letters, &answer.letter, &answer.done) {
        (Some(letters), _, _) => serde_json::to_string_pretty(letters),
        (_, Some(letter), _) => serde_json::to_string_pretty(letter),
        (_, _, Some(done)) => serde_json::to_string_pretty(done),
        _ => serde_json::to_string_pretty(answer),
    };
    writeln!(out, "{}", value.unwrap_or_default())
}

fn print_text(out: &mut impl Write, plan: &Plan, answer: &Answer) -> std::io::Result<()> {
    match plan {
        Plan::List { .. } => print_list(out, answer.letters.as_deref().unwrap_or_default()),
        Plan::Show { .. } => match &answer.letter {
            Some(letter) => print_letter(out, letter),
            None => Ok(()),
        },
        Plan::Decide { action, which } => {
            let done = answer.done.as_deref().unwrap_or_default();
            if done.is_empty() && *which == Which::All {
                return writeln!(out, "no dead letters");
            }
            for d in done {
                match (action, d.requeued_as) {
                    (Action::Requeue, Some(seq)) => writeln!(
                        out,
                        "requeued {} ({}): now message {seq}, at the tail of the queue",
                        d.id,
                        printable(&d.topic)
                    )?,
                    _ => writeln!(out, "purged {} ({})", d.id, printable(&d.topic))?,
                }
            }
            Ok(())
        }
    }
}

fn print_list(out: &mut impl Write, letters: &[Letter]) -> std::io::Result<()> {
    if letters.is_empty() {
        return writeln!(out, "no dead letters");
    }
    let topic_width = letters
        .iter()
        .map(|l| l.topic.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(5, 48);
    writeln!(
        out,
        "{:<10} {:<24} {:>8}  {:<topic_width$}  WHY",
        "ID", "DEAD SINCE (UTC)", "SIZE", "TOPIC"
    )?;
    for l in letters {
        writeln!(
            out,
            "{:<10} {:<24} {:>8}  {:<topic_width$}  {}",
            l.id,
            l.dead_at,
            l.size,
            printable(&l.topic),
            printable(&l.reason)
        )?;
    }
    Ok(())
}

fn print_letter(out: &mut impl Write, l: &Letter) -> std::io::Result<()> {
    writeln!(out, "id:             {}", l.id)?;
    writeln!(out, "topic:          {}", printable(&l.topic))?;
    writeln!(out, "why:            {}", printable(&l.reason))?;
    writeln!(out, "dead since:     {}", l.dead_at)?;
    writeln!(out, "received:       {}", l.received_at)?;
    writeln!(out, "qos, retain:    {}, {}", l.qos, l.retain)?;
    if let Some(path) = &l.coap_path {
        writeln!(out, "coap path:      {}", printable(path))?;
    }
    if let Some(identity) = &l.identity {
        writeln!(out, "identity:       {}", printable(identity))?;
    }
    if let Some(cf) = l.content_format {
        writeln!(out, "content-format: {cf}")?;
    }
    match (&l.payload_text, &l.payload_base64) {
        (Some(text), _) => {
            writeln!(out, "payload ({} bytes, text):", l.size)?;
            writeln!(out, "{}", printable_text(text))
        }
        (_, Some(b64)) => {
            writeln!(out, "payload ({} bytes, not UTF-8, in base64):", l.size)?;
            writeln!(out, "{b64}")
        }
        _ => writeln!(out, "payload: (empty)"),
    }
}

/// A one-line field with control characters escaped, so that what a device
/// sent cannot move the operator's terminal around.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c.is_control() {
            true => c.escape_default().collect::<Vec<_>>(),
            false => vec![c],
        })
        .collect()
}

/// A payload: line breaks and tabs kept, other control characters escaped.
fn printable_text(s: &str) -> String {
    s.lines().map(printable).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_a_device_are_escaped_before_reaching_a_terminal() {
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable_text("x\ny\u{7}"), "x\ny\\u{7}");
    }
}
