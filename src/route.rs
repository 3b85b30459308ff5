//! Routes: which CoAP resources the gateway accepts, and the MQTT topic each
//! message goes to.
//!
//! A route pairs a resource pattern (`sensors/{device}/{metric}`, matched
//! against the request's Uri-Path segments) with a topic template
//! (`site/{gateway}/{device}/{metric}`), the methods it takes, how it is
//! published, and who may use it. Everything here is a pure function of the
//! request: no I/O, no clock, so it is tested exhaustively below.
//!
//! Invariants:
//! - A template can only name variables that exist: captures of its own
//!   pattern, `{gateway}` and `{identity}`. [`Route::new`] refuses the rest,
//!   so resolution never meets an unknown name.
//! - A resolved topic is always a valid MQTT topic name for PUBLISH: no `+`,
//!   `#` or NUL, and a captured segment cannot add topic levels. Publishing an
//!   invalid topic would make the broker drop the whole connection.
//! - `{senml_name}` is known only to routes that split SenML packs into
//!   records; such a topic is finished per record ([`Topic::for_record`]),
//!   where a record's name, unlike a capture, may add levels (`/` is one of
//!   the characters RFC 8428 allows in names).

use crate::message::Qos;
use std::fmt;

/// MQTT topic names are length-prefixed with 16 bits.
const MAX_TOPIC_BYTES: usize = 65_535;

/// The CoAP request methods (RFC 7252, RFC 8132).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Fetch,
    Patch,
    IPatch,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Fetch,
        Method::Patch,
        Method::IPatch,
    ];

    /// The name used in config files (`"POST"`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Fetch => "FETCH",
            Method::Patch => "PATCH",
            Method::IPatch => "iPATCH",
        }
    }

    /// Parses a config-file name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a request gets no route. Each maps to one CoAP response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No route's resource pattern matches the path (4.04).
    NotFound,
    /// A pattern matches, but none of those routes takes this method (4.05).
    MethodNotAllowed,
    /// The route's access control refuses this device (4.03).
    Forbidden,
    /// The path would produce an invalid MQTT topic (4.00).
    InvalidTopic,
}

/// Where and how one accepted request is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub topic: Topic,
    pub qos: Qos,
    pub retain: bool,
    pub expiry_s: Option<u32>,
    /// What the published payload is: the device's bytes, or JSON.
    pub payload: Payload,
    /// Each resolved SenML record becomes a message of its own.
    pub split: bool,
    /// The `{device}` capture, when the route has one: the name the
    /// device table lists the device under.
    pub device: Option<String>,
}

/// A route's `payload` key: what reaches the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Payload {
    /// The device's bytes, untouched (the default).
    #[default]
    Raw,
    /// JSON, whatever the device sent (see [`crate::translate`]).
    Json,
}

impl Payload {
    pub fn from_name(name: &str) -> Option<Payload> {
        match name {
            "raw" => Some(Payload::Raw),
            "json" => Some(Payload::Json),
            _ => None,
        }
    }
}

/// A topic rendered from a request; with `{senml_name}` in the template,
/// the places a record's name goes are still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    SenmlName,
}

impl Topic {
    /// True when the template names `{senml_name}`.
    pub fn per_record(&self) -> bool {
        self.0.contains(&Piece::SenmlName)
    }

    /// The finished topic for one message: `name` is the SenML record's
    /// resolved name, for templates with `{senml_name}`. A name that would
    /// make an invalid topic (a wildcard, NUL, empty where a name is
    /// needed, too long) is refused like a bad capture.
    pub fn for_record(&self, name: Option<&str>) -> Result<String, Refusal> {
        let mut topic = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => topic.push_str(text),
                Piece::SenmlName => {
                    let name = name
                        .filter(|n| !n.is_empty())
                        .ok_or(Refusal::InvalidTopic)?;
                    if name.contains(['+', '#', '\0']) {
                        return Err(Refusal::InvalidTopic);
                    }
                    topic.push_str(name);
                }
            }
        }
        if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
            return Err(Refusal::InvalidTopic);
        }
        Ok(topic)
    }
}

/// A route that cannot be built; names the config key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("resource: {0}")]
    Resource(String),
    #[error("topic: {0}")]
    Topic(String),
    #[error("identity: {0}")]
    Identity(String),
    #[error("identities: {0}")]
    Identities(String),
    #[error("methods: {0}")]
    Methods(String),
    #[error("split: {0}")]
    Split(String),
}

impl RouteError {
    /// The config key the problem is in (`resource`, `topic`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            RouteError::Resource(_) => "resource",
            RouteError::Topic(_) => "topic",
            RouteError::Identity(_) => "identity",
            RouteError::Identities(_) => "identities",
            RouteError::Methods(_) => "methods",
            RouteError::Split(_) => "split",
        }
    }

    /// The problem without the key.
    pub fn detail(&self) -> &str {
        match self {
            RouteError::Resource(d)
            | RouteError::Topic(d)
            | RouteError::Identity(d)
            | RouteError::Identities(d)
            | RouteError::Methods(d)
            | RouteError::Split(d) => d,
        }
    }
}

/// What a route is made from; the config module fills it from `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteSpec<'a> {
    pub resource: &'a str,
    pub topic: &'a str,
    pub methods: &'a [Method],
    pub qos: Qos,
    pub retain: bool,
    /// `identity = "{device}"`: that capture must equal the device identity.
    pub identity: Option<&'a str>,
    /// `identities = ["sensor-*"]`: the identity must match one glob.
    pub identities: &'a [String],
    /// `expiry_s`: the message is worth nothing after this long (MQTT 5
    /// Message Expiry; not published at all once it passed in the queue).
    pub expiry_s: Option<u32>,
    /// `payload = "raw" | "json"`.
    pub payload: Payload,
    /// `split = true`: one message per SenML record (needs `payload = "json"`).
    pub split: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: exactly one non-empty segment.
    Capture(String),
    /// `{name*}`: one or more remaining segments, joined with `/`.
    Rest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
}

/// One `[[route]]`, compiled.
#[derive(Debug, Clone)]
pub struct Route {
    pattern: Vec<Segment>,
    topic: Vec<Part>,
    methods: Vec<Method>,
    qos: Qos,
    retain: bool,
    identity_capture: Option<String>,
    identities: Vec<String>,
    expiry_s: Option<u32>,
    payload: Payload,
    split: bool,
}

impl Route {
    /// Compiles a route, refusing patterns and templates that could not work.
    pub fn new(spec: &RouteSpec<'_>) -> Result<Route, RouteError> {
        let pattern = parse_pattern(spec.resource).map_err(RouteError::Resource)?;
        let captures: Vec<&str> = pattern
            .iter()
            .filter_map(|s| match s {
                Segment::Capture(n) | Segment::Rest(n) => Some(n.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        let topic = parse_template(spec.topic).map_err(RouteError::Topic)?;
        for part in &topic {
            if let Part::Var(name) = part {
                if name == "senml_name" {
                    if !spec.split {
                        return Err(RouteError::Topic(
                            "{senml_name} needs split = true (and payload = \"json\"): only a record split from a SenML pack has one name".into(),
                        ));
                    }
                    continue;
                }
                let known = name == "gateway" || name == "identity" || captures.contains(&&**name);
                if !known {
                    return Err(RouteError::Topic(format!("unknown variable {{{name}}}")));
                }
            }
        }
        if spec.split && spec.payload != Payload::Json {
            return Err(RouteError::Split(
                "needs payload = \"json\": records are split from a SenML pack as it is translated"
                    .into(),
            ));
        }
        if spec.methods.is_empty() {
            return Err(RouteError::Methods(
                "the list is empty; no request could match".into(),
            ));
        }
        let identity_capture = match spec.identity {
            None => None,
            Some(text) => {
                let name = text
                    .strip_prefix('{')
                    .and_then(|t| t.strip_suffix('}'))
                    .filter(|n| is_name(n))
                    .ok_or_else(|| {
                        RouteError::Identity(format!(
                            "expected one capture of the resource, like \"{{device}}\", found \"{text}\""
                        ))
                    })?;
                if !captures.contains(&name) {
                    return Err(RouteError::Identity(format!(
                        "unknown variable {{{name}}}: the resource has no such capture"
                    )));
                }
                Some(name.to_string())
            }
        };
        if let Some(empty) = spec.identities.iter().find(|g| g.is_empty()) {
            return Err(RouteError::Identities(format!(
                "empty pattern {empty:?} would match no device"
            )));
        }
        Ok(Route {
            pattern,
            topic,
            methods: spec.methods.to_vec(),
            qos: spec.qos,
            retain: spec.retain,
            identity_capture,
            identities: spec.identities.to_vec(),
            expiry_s: spec.expiry_s,
            payload: spec.payload,
            split: spec.split,
        })
    }

    /// The captures when `path` matches this route's pattern.
    fn matches<'p>(&self, path: &[&'p str]) -> Option<Vec<(&str, Capture<'p>)>> {
        let mut captures = Vec::new();
        let mut rest = path;
        for segment in &self.pattern {
            match segment {
                Segment::Literal(lit) => {
                    let (first, tail) = rest.split_first()?;
                    if first != lit {
                        return None;
                    }
                    rest = tail;
                }
                Segment::Capture(name) => {
                    let (first, tail) = rest.split_first()?;
                    if first.is_empty() {
                        return None;
                    }
                    captures.push((name.as_str(), Capture::One(first)));
                    rest = tail;
                }
                Segment::Rest(name) => {
                    if rest.is_empty() {
                        return None;
                    }
                    captures.push((name.as_str(), Capture::Many(rest.to_vec())));
                    rest = &[];
                }
            }
        }
        rest.is_empty().then_some(captures)
    }

    fn permits(&self, captures: &[(&str, Capture<'_>)], identity: Option<&str>) -> bool {
        if let Some(name) = &self.identity_capture {
            let Some(identity) = identity else {
                return false;
            };
            let equal = captures
                .iter()
                .any(|(n, c)| n == name && matches!(c, Capture::One(v) if *v == identity));
            if !equal {
                return false;
            }
        }
        if !self.identities.is_empty() {
            let Some(identity) = identity else {
                return false;
            };
            if !self.identities.iter().any(|g| glob_match(g, identity)) {
                return false;
            }
        }
        true
    }

    fn render(
        &self,
        captures: &[(&str, Capture<'_>)],
        gateway: &str,
        identity: Option<&str>,
    ) -> Result<Topic, Refusal> {
        let mut pieces = Vec::new();
        let mut topic = String::new();
        for part in &self.topic {
            match part {
                Part::Literal(lit) => topic.push_str(lit),
                Part::Var(name) if name == "senml_name" => {
                    pieces.push(Piece::Text(std::mem::take(&mut topic)));
                    pieces.push(Piece::SenmlName);
                }
                Part::Var(name) if name == "gateway" => topic.push_str(gateway),
                Part::Var(name) if name == "identity" => {
                    let identity = identity.ok_or(Refusal::Forbidden)?;
                    push_level(&mut topic, identity)?;
                }
                Part::Var(name) => {
                    // Route::new guarantees every other variable is a capture.
                    let (_, capture) = captures
                        .iter()
                        .find(|(n, _)| n == name)
                        .ok_or(Refusal::InvalidTopic)?;
                    match capture {
                        Capture::One(value) => push_level(&mut topic, value)?,
                        Capture::Many(values) => {
                            for (i, value) in values.iter().enumerate() {
                                if i > 0 {
                                    topic.push('/');
                                }
                                push_level(&mut topic, value)?;
                            }
                        }
                    }
                }
            }
        }
        pieces.push(Piece::Text(topic));
        pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
        let topic = Topic(pieces);
        if !topic.per_record() {
            // Checked now; per-record topics are checked with their names.
            topic.for_record(None)?;
        }
        Ok(topic)
    }
}

enum Capture<'p> {
    One(&'p str),
    Many(Vec<&'p str>),
}

/// Appends one value from a request as (part of) a single topic level.
fn push_level(topic: &mut String, value: &str) -> Result<(), Refusal> {
    if value.contains(['+', '#', '/', '\0']) {
        return Err(Refusal::InvalidTopic);
    }
    topic.push_str(value);
    Ok(())
}

/// The routes of one configuration, tried in order.
#[derive(Debug, Clone)]
pub struct Router {
    gateway: String,
    routes: Vec<Route>,
}

impl Router {
    /// `gateway.id`, as `{gateway}` in topics.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    pub fn new(gateway: impl Into<String>, routes: Vec<Route>) -> Router {
        Router {
            gateway: gateway.into(),
            routes,
        }
    }

    /// Decides where a request goes. The first route whose pattern matches
    /// and which takes the method decides; its access control is final.
    pub fn resolve(
        &self,
        path: &[&str],
        method: Method,
        identity: Option<&str>,
    ) -> Result<Resolved, Refusal> {
        let mut path_matched = false;
        for route in &self.routes {
            let Some(captures) = route.matches(path) else {
                continue;
            };
            path_matched = true;
            if !route.methods.contains(&method) {
                continue;
            }
            if !route.permits(&captures, identity) {
                return Err(Refusal::Forbidden);
            }
            let topic = route.render(&captures, &self.gateway, identity)?;
            let device = captures
                .iter()
                .find(|(name, _)| *name == "device")
                .map(|(_, capture)| match capture {
                    Capture::One(value) => value.to_string(),
                    Capture::Many(values) => values.join("/"),
                });
            return Ok(Resolved {
                device,
                topic,
                qos: route.qos,
                retain: route.retain,
                expiry_s: route.expiry_s,
                payload: route.payload,
                split: route.split,
            });
        }
        Err(if path_matched {
            Refusal::MethodNotAllowed
        } else {
            Refusal::NotFound
        })
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_pattern(resource: &str) -> Result<Vec<Segment>, String> {
    let trimmed = resource.strip_prefix('/').unwrap_or(resource);
    if trimmed.is_empty() {
        return Err("is empty; give at least one path segment, like \"sensors/{device}\"".into());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    let mut names: Vec<&str> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let segment = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
        {
            let (name, rest) = match inner.strip_suffix('*') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            if !is_name(name) {
                return Err(format!("invalid capture name {{{inner}}}"));
            }
            if name == "gateway" || name == "identity" {
                return Err(format!(
                    "{{{name}}} is reserved; choose another capture name"
                ));
            }
            if names.contains(&name) {
                return Err(format!("capture {{{name}}} appears twice"));
            }
            names.push(name);
            if rest {
                if i + 1 != parts.len() {
                    return Err(format!("{{{name}*}} must be the last segment"));
                }
                Segment::Rest(name.to_string())
            } else {
                Segment::Capture(name.to_string())
            }
        } else if part.contains(['{', '}']) {
            return Err(format!(
                "segment \"{part}\": a capture must be a whole segment, like {{name}}"
            ));
        } else if part.is_empty() {
            return Err("has an empty segment (\"//\" or a trailing \"/\")".into());
        } else {
            Segment::Literal(part.to_string())
        };
        segments.push(segment);
    }
    Ok(segments)
}

fn parse_template(template: &str) -> Result<Vec<Part>, String> {
    if template.is_empty() {
        return Err("is empty".into());
    }
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                parts.push(Part::Literal(rest.to_string()));
                break;
            }
            Some(at) if rest.as_bytes()[at] == b'}' => {
                return Err(format!("unmatched '}}' in \"{template}\""));
            }
            Some(at) => {
                if at > 0 {
                    parts.push(Part::Literal(rest[..at].to_string()));
                }
                let after = &rest[at + 1..];
                let close = after
                    .find('}')
                    .ok_or_else(|| format!("unclosed '{{' in \"{template}\""))?;
                let name = &after[..close];
                if !is_name(name) {
                    return Err(format!("invalid variable name {{{name}}}"));
                }
                parts.push(Part::Var(name.to_string()));
                rest = &after[close + 1..];
            }
        }
    }
    for part in &parts {
        if let Part::Literal(lit) = part {
            if lit.contains(['+', '#', '\0']) {
                return Err(format!(
                    "\"{template}\" contains an MQTT wildcard or NUL; a published topic cannot"
                ));
            }
        }
    }
    Ok(parts)
}

/// `*` matches any run of characters, `?` exactly one; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST_PUT: &[Method] = &[Method::Post, Method::Put];

    fn spec<'a>(resource: &'a str, topic: &'a str) -> RouteSpec<'a> {
        RouteSpec {
            resource,
            topic,
            methods: POST_PUT,
            qos: Qos::AtLeastOnce,
            retain: false,
            identity: None,
            identities: &[],
            expiry_s: None,
            payload: Payload::Raw,
            split: false,
        }
    }

    fn router(specs: &[RouteSpec<'_>]) -> Router {
        let routes = specs
            .iter()
            .map(|s| Route::new(s).expect("valid route"))
            .collect();
        Router::new("gw1", routes)
    }

    fn topic(r: &Router, path: &str) -> Result<String, Refusal> {
        let segments: Vec<&str> = path.split('/').collect();
        r.resolve(&segments, Method::Post, None)
            .and_then(|x| x.topic.for_record(None))
    }

    #[test]
    fn captures_and_gateway_fill_the_topic() {
        let r = router(&[spec(
            "sensors/{device}/{metric}",
            "site/{gateway}/{device}/{metric}",
        )]);
        assert_eq!(topic(&r, "sensors/d7/temp"), Ok("site/gw1/d7/temp".into()));
    }

    #[test]
    fn leading_slash_in_resource_is_optional() {
        let r = router(&[spec("/a/{x}", "t/{x}")]);
        assert_eq!(topic(&r, "a/1"), Ok("t/1".into()));
    }

    #[test]
    fn literal_segments_match_exactly() {
        let r = router(&[spec("sensors/{device}", "t/{device}")]);
        assert_eq!(topic(&r, "Sensors/d"), Err(Refusal::NotFound));
        assert_eq!(topic(&r, "sensors"), Err(Refusal::NotFound));
        assert_eq!(topic(&r, "sensors/d/extra"), Err(Refusal::NotFound));
    }

    #[test]
    fn rest_capture_takes_all_remaining_segments() {
        let r = router(&[spec("raw/{rest*}", "r/{rest}")]);
        assert_eq!(topic(&r, "raw/a/b/c"), Ok("r/a/b/c".into()));
        assert_eq!(topic(&r, "raw"), Err(Refusal::NotFound));
    }

    #[test]
    fn single_capture_refuses_an_empty_segment() {
        let r = router(&[spec("s/{d}", "t/{d}")]);
        assert_eq!(topic(&r, "s/"), Err(Refusal::NotFound));
    }

    #[test]
    fn routes_are_tried_in_order() {
        let r = router(&[spec("s/special", "first"), spec("s/{d}", "second/{d}")]);
        assert_eq!(topic(&r, "s/special"), Ok("first".into()));
        assert_eq!(topic(&r, "s/other"), Ok("second/other".into()));
    }

    #[test]
    fn wrong_method_on_a_matching_path_is_method_not_allowed() {
        let r = router(&[spec("s/{d}", "t/{d}")]);
        assert_eq!(
            r.resolve(&["s", "x"], Method::Get, None),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            r.resolve(&["q", "x"], Method::Get, None),
            Err(Refusal::NotFound)
        );
    }

    #[test]
    fn a_later_route_may_take_the_method_an_earlier_one_refuses() {
        let get = [Method::Get];
        let mut second = spec("s/{d}", "get/{d}");
        second.methods = &get;
        let r = router(&[spec("s/{d}", "post/{d}"), second]);
        assert_eq!(
            r.resolve(&["s", "x"], Method::Get, None)
                .and_then(|x| x.topic.for_record(None)),
            Ok("get/x".into())
        );
    }

    #[test]
    fn wildcards_and_separators_in_captures_are_refused() {
        let r = router(&[spec("s/{d}", "t/{d}")]);
        for bad in ["a+b", "#", "a\0b", "x/y"] {
            let path = ["s", bad];
            assert_eq!(
                r.resolve(&path, Method::Post, None),
                Err(Refusal::InvalidTopic),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn qos_and_retain_come_from_the_route() {
        let mut s = spec("s", "t");
        s.qos = Qos::AtMostOnce;
        s.retain = true;
        let r = router(&[s]);
        let got = r.resolve(&["s"], Method::Put, None).expect("resolves");
        assert_eq!((got.qos, got.retain), (Qos::AtMostOnce, true));
    }

    #[test]
    fn unknown_template_variable_is_an_error_naming_it() {
        let err = Route::new(&spec("sensors/{device}", "t/{devce}")).unwrap_err();
        assert_eq!(err, RouteError::Topic("unknown variable {devce}".into()));
        assert_eq!(err.key(), "topic");
    }

    #[test]
    fn malformed_patterns_are_errors() {
        for bad in [
            "",
            "/",
            "a//b",
            "a/",
            "a/{rest*}/b",
            "a/x{y}",
            "{gateway}",
            "{a}/{a}",
            "{1x}",
        ] {
            let err = Route::new(&spec(bad, "t")).unwrap_err();
            assert_eq!(err.key(), "resource", "{bad:?}");
        }
    }

    #[test]
    fn malformed_templates_are_errors() {
        for bad in ["", "t/{", "t/}", "t/+", "t/#", "t/{x y}"] {
            let err = Route::new(&spec("s", bad)).unwrap_err();
            assert_eq!(err.key(), "topic", "{bad:?}");
        }
    }

    #[test]
    fn empty_methods_is_an_error() {
        let mut s = spec("s", "t");
        s.methods = &[];
        assert_eq!(Route::new(&s).unwrap_err().key(), "methods");
    }

    #[test]
    fn identity_capture_must_equal_the_device_identity() {
        let mut s = spec("sensors/{device}", "t/{identity}");
        s.identity = Some("{device}");
        let r = router(&[s]);
        let ok = r.resolve(&["sensors", "d1"], Method::Post, Some("d1"));
        assert_eq!(ok.and_then(|x| x.topic.for_record(None)), Ok("t/d1".into()));
        assert_eq!(
            r.resolve(&["sensors", "d2"], Method::Post, Some("d1")),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            r.resolve(&["sensors", "d1"], Method::Post, None),
            Err(Refusal::Forbidden)
        );
    }

    #[test]
    fn identity_acl_must_name_a_capture() {
        let mut s = spec("sensors/{device}", "t");
        s.identity = Some("{dev}");
        assert_eq!(Route::new(&s).unwrap_err().key(), "identity");
        s.identity = Some("device");
        assert_eq!(Route::new(&s).unwrap_err().key(), "identity");
    }

    #[test]
    fn identities_allow_list_uses_globs() {
        let globs = ["sensor-*".to_string(), "lab-?".to_string()];
        let mut s = spec("s", "t");
        s.identities = &globs;
        let r = router(&[s]);
        assert!(r.resolve(&["s"], Method::Post, Some("sensor-17")).is_ok());
        assert!(r.resolve(&["s"], Method::Post, Some("lab-3")).is_ok());
        assert_eq!(
            r.resolve(&["s"], Method::Post, Some("lab-33")),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            r.resolve(&["s"], Method::Post, None),
            Err(Refusal::Forbidden)
        );
    }

    #[test]
    fn identity_in_topic_without_an_identity_is_forbidden() {
        let r = router(&[spec("s", "t/{identity}")]);
        assert_eq!(topic(&r, "s"), Err(Refusal::Forbidden));
        let got = r.resolve(&["s"], Method::Post, Some("dev/1"));
        assert_eq!(got, Err(Refusal::InvalidTopic));
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a*b*c", "a-b-x-c"));
        assert!(!glob_match("a*c", "abcd"));
        assert!(glob_match("?", "x"));
        assert!(!glob_match("?", ""));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact!"));
    }

    #[test]
    fn method_names_parse_case_insensitively() {
        assert_eq!(Method::from_name("post"), Some(Method::Post));
        assert_eq!(Method::from_name("IPATCH"), Some(Method::IPatch));
        assert_eq!(Method::from_name("TRACE"), None);
    }

    fn split_spec<'a>(resource: &'a str, topic: &'a str) -> RouteSpec<'a> {
        RouteSpec {
            payload: Payload::Json,
            split: true,
            ..spec(resource, topic)
        }
    }

    #[test]
    fn a_split_route_finishes_its_topic_per_record() {
        let r = router(&[split_spec("s/{device}", "site/{device}/{senml_name}/v")]);
        let resolved = r.resolve(&["s", "d1"], Method::Post, None).unwrap();
        assert!(resolved.split && resolved.topic.per_record());
        assert_eq!(
            resolved
                .topic
                .for_record(Some("urn:dev:ow:10e2073a0108006:temp")),
            Ok("site/d1/urn:dev:ow:10e2073a0108006:temp/v".into())
        );
        // A record name may add levels; it may not be a wildcard, NUL or missing.
        assert_eq!(
            resolved.topic.for_record(Some("3303/0/5700")),
            Ok("site/d1/3303/0/5700/v".into())
        );
        for bad in [Some("a+b"), Some("#"), Some("a\0"), Some(""), None] {
            assert_eq!(
                resolved.topic.for_record(bad),
                Err(Refusal::InvalidTopic),
                "{bad:?}"
            );
        }
        let long = "n".repeat(MAX_TOPIC_BYTES);
        assert_eq!(
            resolved.topic.for_record(Some(&long)),
            Err(Refusal::InvalidTopic)
        );
    }

    #[test]
    fn a_split_route_without_senml_name_keeps_one_topic() {
        let r = router(&[split_spec("s/{device}", "site/{device}")]);
        let resolved = r.resolve(&["s", "d1"], Method::Post, None).unwrap();
        assert!(!resolved.topic.per_record());
        assert_eq!(
            resolved.topic.for_record(Some("ignored")),
            Ok("site/d1".into())
        );
    }

    #[test]
    fn senml_name_needs_split_and_split_needs_json() {
        let err = Route::new(&spec("s/{d}", "t/{senml_name}")).unwrap_err();
        assert_eq!(err.key(), "topic");
        assert!(err.detail().contains("split = true"), "{err}");
        let mut raw_split = spec("s/{d}", "t/{d}");
        raw_split.split = true;
        let err = Route::new(&raw_split).unwrap_err();
        assert_eq!(err.key(), "split");
        assert!(err.detail().contains("payload = \"json\""), "{err}");
    }

    #[test]
    fn the_route_says_what_the_payload_becomes() {
        let mut json = spec("j", "t/j");
        json.payload = Payload::Json;
        let r = router(&[json, spec("r", "t/r")]);
        assert_eq!(
            r.resolve(&["j"], Method::Post, None).unwrap().payload,
            Payload::Json
        );
        assert_eq!(
            r.resolve(&["r"], Method::Post, None).unwrap().payload,
            Payload::Raw
        );
        assert_eq!(Payload::from_name("json"), Some(Payload::Json));
        assert_eq!(Payload::from_name("cbor"), None);
    }
}
