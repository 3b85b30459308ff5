//! The JSON published to a command's result topic at each change of its
//! state: `{"id", "device", "resource", "status", "code", "payload",
//! "reason"}`. A device's payload is given as text when it is UTF-8, else
//! as base64 with `"payload_encoding": "base64"`.

use super::{Command, Status};
use base64::Engine;
use serde_json::{json, Map, Value};

/// What happened to a command, for its result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    /// The device's response code, "2.04".
    pub code: Option<String>,
    /// The device's response payload.
    pub payload: Option<Vec<u8>>,
    /// Why, in words (rejections, failures).
    pub reason: Option<String>,
}

/// The result's JSON body.
pub fn to_json(command: &Command, status: Status, detail: &Detail) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("id".into(), json!(command.id.to_string()));
    body.insert("device".into(), json!(command.device));
    body.insert("resource".into(), json!(command.resource));
    body.insert("status".into(), json!(status.name()));
    if let Some(code) = &detail.code {
        body.insert("code".into(), json!(code));
    }
    if let Some(payload) = &detail.payload {
        match std::str::from_utf8(payload) {
            Ok(text) => {
                body.insert("payload".into(), json!(text));
            }
            Err(_) => {
                body.insert(
                    "payload".into(),
                    json!(base64::engine::general_purpose::STANDARD.encode(payload)),
                );
                body.insert("payload_encoding".into(), json!("base64"));
            }
        }
    }
    if let Some(reason) = &detail.reason {
        body.insert("reason".into(), json!(reason));
    }
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Delivery;
    use crate::route::Method;

    fn command() -> Command {
        Command {
            id: 42,
            device: "valve-\"3".into(),
            resource: "relay".into(),
            method: Method::Put,
            payload: b"on".to_vec(),
            created_ms: 0,
            expires_ms: 1,
            delivery: Delivery::Poll,
            result_topic: None,
            correlation: None,
            identity_required: false,
            awake_s: 30,
        }
    }

    #[test]
    fn a_result_carries_the_device_answer_as_text_or_base64() {
        let text = to_json(
            &command(),
            Status::Done,
            &Detail {
                code: Some("2.04".into()),
                payload: Some(b"ok".to_vec()),
                reason: None,
            },
        );
        let v: Value = serde_json::from_slice(&text).expect("json");
        assert_eq!(v["id"], "42");
        assert_eq!(v["device"], "valve-\"3");
        assert_eq!(v["status"], "done");
        assert_eq!(v["code"], "2.04");
        assert_eq!(v["payload"], "ok");
        let binary = to_json(
            &command(),
            Status::Failed,
            &Detail {
                payload: Some(vec![0xff, 0]),
                ..Detail::default()
            },
        );
        let v: Value = serde_json::from_slice(&binary).expect("json");
        assert_eq!(
            (v["payload"].as_str(), v["payload_encoding"].as_str()),
            (Some("/wA="), Some("base64"))
        );
    }
}
