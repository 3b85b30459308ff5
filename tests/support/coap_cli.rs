//! Runs libcoap's real command-line clients (coap-client-notls,
//! coap-client-openssl, coap-client-gnutls) against the daemon, so the
//! daemon is tested against an implementation nobody here wrote.
//!
//! libcoap's client exits 0 whatever happens (no answer, RST, wrong PSK),
//! so the outcome is read from its `-v 6` output. With libcoap 4.3.1 (the
//! bookworm package) that prints, on stdout, one line per PDU it sends
//! first and per response it finally hands to the application:
//! ```text
//! v:1 t:CON c:POST i:7bae {01} [ Uri-Port:15683, Uri-Path:example_data ] :: 'hello'
//! v:1 t:ACK c:4.05 i:7bae {01} [ ] :: 'Method Not Allowed'
//! ```
//! (`t:` type, `c:` method name for requests or `class.detail` for
//! responses, `i:` message id in hex, `{}` token, `[]` options, `::` the
//! payload if any). Empty ACKs, retransmissions and intermediate Block1
//! exchanges are not printed. Diagnostics go to stderr with a timestamp,
//! e.g. `... INFO timeout` (no answer within `-B`), `... ALRT got RST for
//! mid=0x568`, `... WARN ... ICMP: Connection refused`.
//!
//! The client always talks to a non-default port here, so it adds a
//! Uri-Port option to every request (use `-U` to suppress it).

use std::time::Duration;

use super::run_with_timeout;

/// What one run of a libcoap client did.
#[derive(Debug, Clone)]
pub struct CliOutcome {
    /// The command line, for messages.
    pub command: String,
    /// False if it had to be killed after the harness timeout.
    pub exited: bool,
    /// stdout and stderr interleaved.
    pub output: String,
    /// `class.detail` of the last response line, e.g. "2.04"; `None` if no
    /// response was printed (no answer, RST, handshake failure).
    pub response_code: Option<String>,
    /// Type of that response: "ACK", "CON" or "NON".
    pub response_type: Option<String>,
    /// The whole response line.
    pub response_line: Option<String>,
    /// libcoap reported an RST for its request.
    pub got_rst: bool,
    /// libcoap gave up waiting (`-B` seconds passed without an answer).
    pub gave_up: bool,
}

impl CliOutcome {
    /// The response code, panicking with the whole output if there is none.
    pub fn expect_code(&self) -> &str {
        self.response_code
            .as_deref()
            .unwrap_or_else(|| panic!("{} printed no response:\n{}", self.command, self.output))
    }
}

/// Asserts the response code, showing the command and its whole output
/// when it differs.
pub fn assert_code(outcome: &CliOutcome, code: &str) {
    assert_eq!(
        outcome.response_code.as_deref(),
        Some(code),
        "{}\n{}",
        outcome.command,
        outcome.output
    );
}

/// How long the harness lets a client run before killing it: above
/// libcoap's own default wait of 90 s (`-B`), so a hang is a real hang.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(100);

/// Runs `binary -v 6 args…` (e.g. `["-m", "post", "-e", "x", "coap://…"]`).
/// A later `-v` in `args` wins; parsing needs level 6 or more.
pub fn coap_client(binary: &str, args: &[&str]) -> CliOutcome {
    coap_client_with_timeout(binary, args, CLI_TIMEOUT)
}

pub fn coap_client_with_timeout(binary: &str, args: &[&str], timeout: Duration) -> CliOutcome {
    let mut full_args = vec!["-v", "6"];
    full_args.extend_from_slice(args);
    let command = format!("{binary} {}", full_args.join(" "));
    let run = run_with_timeout(binary, &full_args, timeout);
    parse_output(command, !run.timed_out(), run.output)
}

/// Convenience: `coap-client-notls -B 20 -m post -e PAYLOAD
/// coap://127.0.0.1:PORT/PATH` plus `extra` (before the URI).
pub fn post_notls(port: u16, path: &str, payload: &str, extra: &[&str]) -> CliOutcome {
    let uri = format!("coap://127.0.0.1:{port}/{}", path.trim_start_matches('/'));
    let mut args = vec!["-B", "20", "-m", "post", "-e", payload];
    args.extend_from_slice(extra);
    args.push(&uri);
    coap_client("coap-client-notls", &args)
}

/// Extracts the outcome from a client's `-v 6` output.
pub fn parse_output(command: String, exited: bool, output: String) -> CliOutcome {
    let mut response = None;
    for line in output.lines() {
        if let Some((mtype, code)) = parse_pdu_line(line) {
            response = Some((mtype, code, line.trim().to_string()));
        }
    }
    let got_rst = output.contains("got RST");
    let gave_up = output.lines().any(|l| l.trim_end().ends_with(" timeout"));
    let (response_type, response_code, response_line) = match response {
        Some((t, c, l)) => (Some(t), Some(c), Some(l)),
        None => (None, None, None),
    };
    CliOutcome {
        command,
        exited,
        output,
        response_code,
        response_type,
        response_line,
        got_rst,
        gave_up,
    }
}

/// `(type, code)` of a PDU line whose code is a response code `c.dd`
/// with class 1..=7 (request lines carry method names, empty ones 0.00).
fn parse_pdu_line(line: &str) -> Option<(String, String)> {
    let pdu = &line[line.find("v:1 t:")?..];
    let mut fields = pdu.split_whitespace();
    fields.next()?; // v:1
    let mtype = fields.next()?.strip_prefix("t:")?;
    let code = fields.next()?.strip_prefix("c:")?;
    let (class, detail) = code.split_once('.')?;
    let is_response = class.len() == 1
        && detail.len() == 2
        && detail.bytes().all(|b| b.is_ascii_digit())
        && matches!(class.as_bytes()[0], b'1'..=b'7');
    is_response.then(|| (mtype.to_string(), code.to_string()))
}
