//! The admin socket's language: one JSON request per line, one JSON answer
//! per line. Pure: a line in, a [`Plan`] (what to ask of the store) out, and
//! the answers' shapes; no sockets, no store, so every request a client can
//! send is tested here.
//!
//! Requests:
//! - `{"op":"list"}` (optionally `"limit": N`): dead letters, oldest first,
//!   without their payloads.
//! - `{"op":"show","id":N}`: one dead letter, payload included.
//! - `{"op":"requeue","ids":[N,…]}` or `{"op":"requeue","all":true}`.
//! - `{"op":"purge","ids":[N,…]}` or `{"op":"purge","all":true}`.
//!
//! Answers: `{"ok":true,…}` with `letters`, `letter` or `done`, or
//! `{"ok":false,"error":"…"}` with a sentence a person can act on.

use crate::store::{Action, DeadLetter, Decided, Seq, Which, DEAD_LETTER_CAPACITY};
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The longest request line the daemon reads (ids of every dead letter fit).
pub const MAX_REQUEST: usize = 1 << 20;

/// What a request asks of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    List { limit: usize },
    Show { id: Seq },
    Decide { action: Action, which: Which },
}

impl Plan {
    /// Whether it changes the queue (and so is logged with who asked).
    pub fn mutates(&self) -> bool {
        matches!(self, Plan::Decide { .. })
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
enum Request {
    List {
        limit: Option<usize>,
    },
    Show {
        id: Seq,
    },
    Requeue {
        #[serde(default)]
        ids: Vec<Seq>,
        #[serde(default)]
        all: bool,
    },
    Purge {
        #[serde(default)]
        ids: Vec<Seq>,
        #[serde(default)]
        all: bool,
    },
}

/// Reads one request line into what to ask of the store, or says what is
/// wrong with it.
pub fn plan(line: &str) -> Result<Plan, String> {
    let request: Request = serde_json::from_str(line.trim())
        .map_err(|e| format!("not a request this daemon understands: {e}"))?;
    let decide = |action, ids: Vec<Seq>, all| -> Result<Plan, String> {
        let which = match (all, ids.is_empty()) {
            (true, true) => Which::All,
            (false, false) => Which::Ids(ids),
            (true, false) => return Err("give ids or all, not both".into()),
            (false, true) => return Err("give the ids of the dead letters, or all".into()),
        };
        Ok(Plan::Decide { action, which })
    };
    match request {
        Request::List { limit } => Ok(Plan::List {
            limit: limit.unwrap_or(DEAD_LETTER_CAPACITY),
        }),
        Request::Show { id } => Ok(Plan::Show { id }),
        Request::Requeue { ids, all } => decide(Action::Requeue, ids, all),
        Request::Purge { ids, all } => decide(Action::Purge, ids, all),
    }
}

/// The request line for `plan` (what the CLI sends).
pub fn request_line(plan: &Plan) -> String {
    let value = match plan {
        Plan::List { limit } => serde_json::json!({"op": "list", "limit": limit}),
        Plan::Show { id } => serde_json::json!({"op": "show", "id": id}),
        Plan::Decide { action, which } => {
            let op = match action {
                Action::Requeue => "requeue",
                Action::Purge => "purge",
            };
            match which {
                Which::All => serde_json::json!({"op": op, "all": true}),
                Which::Ids(ids) => serde_json::json!({"op": op, "ids": ids}),
            }
        }
    };
    value.to_string() + "\n"
}

/// One dead letter as the socket (and `--json`) shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letter {
    pub id: Seq,
    pub topic: String,
    /// The payload's bytes.
    pub size: usize,
    /// When it was moved to the dead letters (RFC 3339, UTC).
    pub dead_at: String,
    /// When its device was answered (RFC 3339, UTC).
    pub received_at: String,
    /// Why the broker would not take it.
    pub reason: String,
    pub qos: u8,
    pub retain: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coap_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_format: Option<u16>,
    /// The payload, when it is UTF-8 text (only with `show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
    /// The payload in base64, when it is not UTF-8 (only with `show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl Letter {
    /// `letter` as shown, with its payload when `with_payload`.
    pub fn new(letter: &DeadLetter, with_payload: bool) -> Letter {
        use crate::uplink::properties::rfc3339_ms;
        let message = &letter.stored.message;
        let meta = &message.meta;
        let (payload_text, payload_base64) =
            match (with_payload, std::str::from_utf8(&message.payload)) {
                (false, _) => (None, None),
                (true, Ok(text)) => (Some(text.to_string()), None),
                (true, Err(_)) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&message.payload)),
                ),
            };
        Letter {
            id: letter.seq,
            topic: message.topic.clone(),
            size: message.payload.len(),
            dead_at: rfc3339_ms(letter.dead_ms),
            received_at: rfc3339_ms(letter.stored.received_ms),
            reason: letter.reason.clone(),
            qos: message.qos.level(),
            retain: message.retain,
            coap_path: Some(meta.coap_path.clone()).filter(|p| !p.is_empty()),
            identity: meta.identity.as_deref().map(str::to_string),
            content_format: meta.content_format,
            payload_text,
            payload_base64,
        }
    }
}

/// What a requeue or purge did to one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub id: Seq,
    pub topic: String,
    /// Its new place in the queue, when requeued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued_as: Option<Seq>,
}

impl From<&Decided> for Done {
    fn from(d: &Decided) -> Done {
        Done {
            id: d.id,
            topic: d.topic.clone(),
            requeued_as: d.requeued_as,
        }
    }
}

/// One answer line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letters: Option<Vec<Letter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letter: Option<Letter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<Vec<Done>>,
}

impl Answer {
    fn ok() -> Answer {
        Answer {
            ok: true,
            error: None,
            letters: None,
            letter: None,
            done: None,
        }
    }

    pub fn refused(error: impl Into<String>) -> Answer {
        Answer {
            ok: false,
            error: Some(error.into()),
            ..Answer::ok()
        }
    }

    pub fn letters(letters: Vec<Letter>) -> Answer {
        Answer {
            letters: Some(letters),
            ..Answer::ok()
        }
    }

    pub fn letter(letter: Letter) -> Answer {
        Answer {
            letter: Some(letter),
            ..Answer::ok()
        }
    }

    pub fn done(done: Vec<Done>) -> Answer {
        Answer {
            done: Some(done),
            ..Answer::ok()
        }
    }

    /// The answer as one line.
    pub fn line(&self) -> String {
        // Serialising these types cannot fail (no maps with non-string keys).
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"ok\":false,\"error\":\"the answer could not be written: {e}\"}}")
        }) + "\n"
    }
}

/// The answer for `show id` when there is no such dead letter.
pub fn no_such_letter(id: Seq) -> Answer {
    Answer::refused(format!(
        "no dead letter has id {id}; `coap2mqtt dead-letters list` shows the ids"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_the_cli_sends_reads_back_as_the_same_plan() {
        let plans = [
            Plan::List { limit: 7 },
            Plan::Show { id: 42 },
            Plan::Decide {
                action: Action::Requeue,
                which: Which::Ids(vec![3, 5]),
            },
            Plan::Decide {
                action: Action::Requeue,
                which: Which::All,
            },
            Plan::Decide {
                action: Action::Purge,
                which: Which::Ids(vec![9]),
            },
            Plan::Decide {
                action: Action::Purge,
                which: Which::All,
            },
        ];
        for p in plans {
            assert_eq!(plan(&request_line(&p)), Ok(p));
        }
    }

    #[test]
    fn list_without_a_limit_lists_every_dead_letter() {
        assert_eq!(
            plan(r#"{"op":"list"}"#),
            Ok(Plan::List {
                limit: DEAD_LETTER_CAPACITY
            })
        );
    }

    #[test]
    fn only_requeue_and_purge_change_the_queue() {
        assert!(!plan(r#"{"op":"list"}"#).expect("list").mutates());
        assert!(!plan(r#"{"op":"show","id":1}"#).expect("show").mutates());
        assert!(plan(r#"{"op":"purge","all":true}"#)
            .expect("purge")
            .mutates());
    }

    #[test]
    fn a_requeue_needs_ids_or_all_but_not_both() {
        let none = plan(r#"{"op":"requeue"}"#).expect_err("refused");
        assert!(none.contains("give the ids"), "{none}");
        let both = plan(r#"{"op":"purge","ids":[1],"all":true}"#).expect_err("refused");
        assert!(both.contains("not both"), "{both}");
    }

    #[test]
    fn garbage_unknown_ops_and_unknown_fields_are_refused_without_a_panic() {
        for line in [
            "",
            "{",
            "null",
            "[1,2]",
            r#"{"op":"drop-table"}"#,
            r#"{"op":"show"}"#,
            r#"{"op":"show","id":-1}"#,
            r#"{"op":"show","id":1,"extra":true}"#,
            r#"{"op":"requeue","ids":["1"]}"#,
            "\u{0}\u{ffff}",
        ] {
            assert!(plan(line).is_err(), "{line:?} was accepted");
        }
    }

    #[test]
    fn a_payload_is_shown_as_text_when_it_is_utf8_else_as_base64() {
        use crate::message::{Message, Qos};
        use crate::store::Stored;
        let letter = |payload: &[u8]| DeadLetter {
            seq: 12,
            dead_ms: 1_800_000_000_000,
            reason: "refused".into(),
            stored: Stored {
                message: Message {
                    topic: "site/t".into(),
                    payload: payload.to_vec(),
                    qos: Qos::AtLeastOnce,
                    retain: false,
                    meta: Default::default(),
                },
                received_ms: 1_800_000_000_000,
                recall: Vec::new(),
            },
        };
        let text = Letter::new(&letter(b"21.5"), true);
        assert_eq!((text.payload_text.as_deref(), text.size), (Some("21.5"), 4));
        let binary = Letter::new(&letter(&[0xff, 0x00]), true);
        assert_eq!(binary.payload_base64.as_deref(), Some("/wA="));
        let listed = Letter::new(&letter(b"21.5"), false);
        assert_eq!((listed.payload_text, listed.payload_base64), (None, None));
        assert_eq!(listed.dead_at, "2027-01-15T08:00:00.000Z");
    }

    #[test]
    fn an_answer_is_one_line_that_reads_back() {
        let answer = no_such_letter(77);
        let line = answer.line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.contains("77"));
        let back: Answer = serde_json::from_str(&line).expect("json");
        assert_eq!(back, answer);
    }
}
