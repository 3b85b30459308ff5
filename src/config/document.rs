//! The TOML document as a tree that remembers where every key and value is,
//! and a reader over it that reports problems instead of stopping at them.
//!
//! Why not derive `Deserialize` straight into the config types: serde stops
//! at the first error, and its errors know a byte position but not the key
//! path. Reading a spanned tree by hand lets validation report every problem
//! with its line and full key (`route[2].topic`), and an unknown key with the
//! key that was probably meant.
//!
//! The tree is built through toml's public serde interface. toml hands out
//! spans to `toml::Spanned` and dates to `toml::value::Datetime` by way of
//! reserved struct names; [`protocol`] learns those names from the two types
//! themselves, so nothing here copies toml's private constants. Should a
//! future toml change that handshake, the tree simply has no spans and
//! problems come without line numbers; the tests would say so.

use super::Problem;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::sync::OnceLock;

pub(super) type Span = Range<usize>;

/// One value of the document and the bytes it came from. Values toml does
/// not place (tables implied by `[a.b]` or by dotted keys) have no span.
#[derive(Debug)]
pub(super) struct Node {
    pub span: Option<Span>,
    pub value: Value,
}

#[derive(Debug)]
pub(super) enum Value {
    String(String),
    Integer(i64),
    /// No key takes a float or a date; only their kind is kept, for errors.
    Float,
    Boolean(bool),
    Datetime,
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

/// One `key = value` of a table, in document order.
#[derive(Debug)]
pub(super) struct Entry {
    pub key: String,
    pub key_span: Option<Span>,
    pub value: Node,
}

impl Value {
    /// How a type error names what it found.
    fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// A document that is not TOML: where, and toml's explanation.
pub(super) struct SyntaxError {
    pub span: Option<Span>,
    pub message: String,
}

pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    toml::from_str::<Node>(text).map_err(|e| SyntaxError {
        span: e.span(),
        // toml spreads some messages over lines; a problem is one line.
        message: e.message().trim().lines().collect::<Vec<_>>().join(": "),
    })
}

/// The reserved names by which toml's deserializer hands out spans and dates.
struct Protocol {
    spanned_name: &'static str,
    spanned_fields: &'static [&'static str],
    datetime_field: Option<&'static str>,
}

fn protocol() -> &'static Protocol {
    static PROTOCOL: OnceLock<Protocol> = OnceLock::new();
    PROTOCOL.get_or_init(|| {
        let (spanned_name, spanned_fields) = requested_struct::<toml::Spanned<()>>();
        let (_, datetime_fields) = requested_struct::<toml::value::Datetime>();
        Protocol {
            spanned_name,
            spanned_fields,
            datetime_field: datetime_fields.first().copied(),
        }
    })
}

/// The struct name and fields `T` asks its deserializer for.
fn requested_struct<T: for<'de> Deserialize<'de>>() -> (&'static str, &'static [&'static str]) {
    let recorder = Recorder(Cell::new(("", &[])));
    let _ = T::deserialize(&recorder);
    recorder.0.get()
}

struct Recorder(Cell<(&'static str, &'static [&'static str])>);

impl<'de> Deserializer<'de> for &Recorder {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only recording"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.set((name, fields));
        Err(de::Error::custom("only recording"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

impl<'de> Deserialize<'de> for Node {
    /// Asks for the span; toml answers with it where it has one.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        let p = protocol();
        d.deserialize_struct(p.spanned_name, p.spanned_fields, NodeVisitor)
    }
}

/// The value inside a span, which must not ask for a span again.
struct Unspanned;

impl<'de> DeserializeSeed<'de> for Unspanned {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

fn bare(value: Value) -> Node {
    Node { span: None, value }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(bare(Value::Boolean(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(bare(Value::Integer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(|v| bare(Value::Integer(v)))
            .map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(bare(Value::Float))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(bare(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(bare(Value::String(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(bare(Value::Array(items)))
    }

    /// A table, or one of toml's two handshakes: a span around a value, or a
    /// date-time. The first key tells which.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let p = protocol();
        let Some(first) = map.next_key::<Node>()? else {
            return Ok(bare(Value::Table(Vec::new())));
        };
        let (first, first_span) = key_of(first)?;
        if p.spanned_fields.first() == Some(&first.as_str()) {
            return spanned(map, first, p.spanned_fields);
        }
        if p.datetime_field == Some(first.as_str()) {
            map.next_value::<de::IgnoredAny>()?;
            return Ok(bare(Value::Datetime));
        }
        let mut entries = vec![Entry {
            key: first,
            key_span: first_span,
            value: map.next_value()?,
        }];
        while let Some(key) = map.next_key::<Node>()? {
            let (key, key_span) = key_of(key)?;
            let value = map.next_value()?;
            entries.push(Entry {
                key,
                key_span,
                value,
            });
        }
        Ok(bare(Value::Table(entries)))
    }
}

fn key_of<E: de::Error>(node: Node) -> Result<(String, Option<Span>), E> {
    match node.value {
        Value::String(key) => Ok((key, node.span)),
        other => Err(E::custom(format!("expected a key, found {}", other.kind()))),
    }
}

/// Reads the `start`, `end` and `value` entries of toml's span handshake.
fn spanned<'de, A: MapAccess<'de>>(
    mut map: A,
    first: String,
    fields: &[&str],
) -> Result<Node, A::Error> {
    let (mut start, mut end, mut node) = (None, None, None);
    let mut key = Some(first);
    while let Some(name) = key {
        match fields.iter().position(|f| *f == name) {
            Some(0) => start = Some(map.next_value::<usize>()?),
            Some(1) => end = Some(map.next_value::<usize>()?),
            Some(2) => node = Some(map.next_value_seed(Unspanned)?),
            _ => return Err(de::Error::custom(format!("unexpected span field {name}"))),
        }
        key = map.next_key::<String>()?;
    }
    let mut node = node.ok_or_else(|| de::Error::custom("span without a value"))?;
    if let (Some(start), Some(end)) = (start, end) {
        node.span = Some(start..end);
    }
    Ok(node)
}

/// Collects problems, turning byte spans into line numbers.
pub(super) struct Report<'a> {
    file: &'a Path,
    text: &'a str,
    pub problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Report<'a> {
        Report {
            file,
            text,
            problems: Vec::new(),
        }
    }

    /// The 1-based line holding byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    pub fn add(&mut self, span: Option<&Span>, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line(s.start)),
            key: key.into(),
            message: message.into(),
        });
    }

    /// A problem with a value that was read.
    pub fn at<T>(&mut self, place: &Located<T>, message: impl Into<String>) {
        self.add(place.span.as_ref(), place.key.clone(), message);
    }
}

/// A value with the key path and span to report a problem with it.
#[derive(Debug, Clone)]
pub(super) struct Located<T> {
    pub value: T,
    pub key: String,
    pub span: Option<Span>,
}

/// One table of the document, read key by key. Keys it was not told about
/// are reported when it is opened, so every reader gets unknown-key checks.
pub(super) struct Table<'a> {
    path: String,
    /// Where a missing key is reported: the table's header or its key.
    span: Option<Span>,
    entries: &'a [Entry],
}

impl<'a> Table<'a> {
    /// The document itself. A missing key of the root is reported on line 1.
    pub fn root(node: &'a Node, known: &[&str], r: &mut Report) -> Table<'a> {
        Table::open(String::new(), Some(0..0), node, Some(known), r)
    }

    /// `known: None` takes any key: a table whose keys are data (the PSK
    /// file's identities), not settings.
    fn open(
        path: String,
        span: Option<Span>,
        node: &'a Node,
        known: Option<&[&str]>,
        r: &mut Report,
    ) -> Table<'a> {
        let entries: &'a [Entry] = match &node.value {
            Value::Table(entries) => entries,
            _ => &[],
        };
        let table = Table {
            path,
            span,
            entries,
        };
        for entry in entries {
            let Some(known) = known else { break };
            if !known.contains(&entry.key.as_str()) {
                let message = match closest(&entry.key, known) {
                    Some(meant) => format!("unknown key; did you mean \"{meant}\"?"),
                    None => format!("unknown key; expected one of: {}", known.join(", ")),
                };
                r.add(entry.key_span.as_ref(), table.key(&entry.key), message);
            }
        }
        table
    }

    fn empty(path: String, span: Option<Span>) -> Table<'a> {
        Table {
            path,
            span,
            entries: &[],
        }
    }

    /// The full key path of one of this table's keys.
    pub fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn entry(&self, name: &str) -> Option<&'a Entry> {
        self.entries.iter().find(|e| e.key == name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// Where a key's value is, or failing that the key.
    pub fn span_of(&self, name: &str) -> Option<Span> {
        self.entry(name)
            .and_then(|e| e.value.span.clone().or_else(|| e.key_span.clone()))
    }

    /// Reports a required key that is absent, at the table's header.
    pub fn missing(&self, name: &str, message: &str, r: &mut Report) {
        r.add(self.span.as_ref(), self.key(name), message);
    }

    /// The value of `name` if present and of the type `pick` accepts;
    /// otherwise `None`, with a problem when it was present.
    fn typed<T>(
        &self,
        name: &str,
        expected: &str,
        r: &mut Report,
        pick: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<Located<T>> {
        let entry = self.entry(name)?;
        let key = self.key(name);
        let span = entry.value.span.clone().or_else(|| entry.key_span.clone());
        match pick(&entry.value.value) {
            Some(value) => Some(Located { value, key, span }),
            None => {
                let found = entry.value.value.kind();
                r.add(
                    span.as_ref(),
                    key,
                    format!("expected {expected}, found {found}"),
                );
                None
            }
        }
    }

    pub fn str(&self, name: &str, r: &mut Report) -> Option<Located<&'a str>> {
        self.typed(name, "a string", r, |v| match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn bool(&self, name: &str, r: &mut Report) -> Option<Located<bool>> {
        self.typed(name, "true or false", r, |v| match v {
            Value::Boolean(b) => Some(*b),
            _ => None,
        })
    }

    /// An integer within `range`; out of range is a problem.
    pub fn int(
        &self,
        name: &str,
        range: RangeInclusive<i64>,
        r: &mut Report,
    ) -> Option<Located<i64>> {
        let got = self.typed(name, "an integer", r, |v| match v {
            Value::Integer(i) => Some(*i),
            _ => None,
        })?;
        if range.contains(&got.value) {
            return Some(got);
        }
        let (min, max) = (range.start(), range.end());
        let message = if *max == i64::MAX {
            format!("must be at least {min}, found {}", got.value)
        } else {
            format!("must be between {min} and {max}, found {}", got.value)
        };
        r.at(&got, message);
        None
    }

    /// A list of strings, each with its own place. Elements of another
    /// type are reported and left out.
    pub fn strings(&self, name: &str, r: &mut Report) -> Option<Located<Vec<Located<&'a str>>>> {
        let list = self.typed(name, "a list of strings", r, |v| match v {
            Value::Array(items) => Some(items),
            _ => None,
        })?;
        let mut strings = Vec::with_capacity(list.value.len());
        for item in list.value {
            let span = item.span.clone().or_else(|| list.span.clone());
            match &item.value {
                Value::String(s) => strings.push(Located {
                    value: s.as_str(),
                    key: list.key.clone(),
                    span,
                }),
                other => r.add(
                    span.as_ref(),
                    list.key.clone(),
                    format!("expected a string, found {}", other.kind()),
                ),
            }
        }
        Some(Located {
            value: strings,
            key: list.key,
            span: list.span,
        })
    }

    /// A string, or a list of strings (as one or several of a thing).
    pub fn string_or_strings(
        &self,
        name: &str,
        r: &mut Report,
    ) -> Option<Located<Vec<Located<&'a str>>>> {
        let entry = self.entry(name)?;
        match &entry.value.value {
            Value::String(s) => {
                let key = self.key(name);
                let span = entry.value.span.clone().or_else(|| entry.key_span.clone());
                Some(Located {
                    value: vec![Located {
                        value: s.as_str(),
                        key: key.clone(),
                        span: span.clone(),
                    }],
                    key,
                    span,
                })
            }
            _ => self.strings(name, r),
        }
    }

    /// A sub-table (`[name]`); an empty one when it is absent or not a table.
    pub fn table(&self, name: &str, known: &[&str], r: &mut Report) -> Table<'a> {
        self.sub_table(name, Some(known), r)
    }

    /// A sub-table whose keys are data, not settings: any key is taken.
    pub fn map(&self, name: &str, r: &mut Report) -> Table<'a> {
        self.sub_table(name, None, r)
    }

    /// This table's keys, in document order.
    pub fn names(&self) -> impl Iterator<Item = &'a str> {
        self.entries.iter().map(|e| e.key.as_str())
    }

    fn sub_table(&self, name: &str, known: Option<&[&str]>, r: &mut Report) -> Table<'a> {
        let path = self.key(name);
        let Some(entry) = self.entry(name) else {
            return Table::empty(path, self.span.clone());
        };
        let span = entry.value.span.clone().or_else(|| entry.key_span.clone());
        match &entry.value.value {
            Value::Table(_) => Table::open(path, span, &entry.value, known, r),
            other => {
                let found = other.kind();
                r.add(
                    span.as_ref(),
                    path.clone(),
                    format!("expected a table, found {found}"),
                );
                Table::empty(path, span)
            }
        }
    }

    /// An array of tables (`[[name]]`), numbered from 1 in key paths
    /// (`route[1]` is the first) because that is how people count them.
    pub fn tables(
        &self,
        name: &str,
        known: &[&str],
        r: &mut Report,
    ) -> Option<Located<Vec<Table<'a>>>> {
        let expected = format!("an array of tables ([[{name}]])");
        let list = self.typed(name, &expected, r, |v| match v {
            Value::Array(items) => Some(items),
            _ => None,
        })?;
        let mut tables = Vec::with_capacity(list.value.len());
        for (i, item) in list.value.iter().enumerate() {
            let path = format!("{}[{}]", list.key, i + 1);
            let span = item.span.clone().or_else(|| list.span.clone());
            match &item.value {
                Value::Table(_) => tables.push(Table::open(path, span, item, Some(known), r)),
                other => r.add(
                    span.as_ref(),
                    path,
                    format!("expected a table, found {}", other.kind()),
                ),
            }
        }
        Some(Located {
            value: tables,
            key: list.key,
            span: list.span,
        })
    }
}

/// The known key a typo most likely meant, if any is close enough.
fn closest<'k>(typed: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = 2.max(typed.chars().count() / 3);
    known
        .iter()
        .map(|k| (edit_distance(typed, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, case-insensitive: `Listen` meant `listen`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}
