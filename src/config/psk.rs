//! The PSK file: one `[psk]` table mapping each device identity to its key.
//!
//! ```toml
//! [psk]
//! "sensor-01" = "k3y-as-ascii"
//! "sensor-02" = "hex:00ff10"
//! "sensor-03" = "base64:AP8Q"
//! ```
//!
//! The keys are secrets, so the file must be accessible to its owner only
//! (`chmod 600`): the daemon refuses it otherwise, and [`add`] writes it
//! that way. Like the config, a file is valid whole or refused with every
//! problem, each with its line and key. A missing file is not an error
//! here: the daemon serves no PSK device until one is added.

use super::document::{self, Report};
use super::{read_text, ConfigErrors};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Larger than any sensible PSK file (about 10,000 devices).
const MAX_PSK_FILE_BYTES: u64 = 4 << 20;
/// The longest identity and key taken; both travel in one handshake message.
const MAX_IDENTITY_BYTES: usize = 128;
const MAX_KEY_BYTES: usize = 128;
/// Bytes of a generated key: 16 random bytes, AES-128's strength, and the
/// most tinydtls takes (`DTLS_PSK_MAX_KEY_LEN` is 16 in its current
/// releases; Contiki-NG, RIOT and aiocoap's DTLSSocket use it).
pub const GENERATED_KEY_BYTES: usize = 16;
/// The longest key `psk add` makes (libcoap's coap-client reads at most 64).
pub const MAX_GENERATED_KEY_BYTES: usize = 64;

/// What kind of key `psk add` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyForm {
    /// `n` random bytes, written `"hex:.."` in the file and shown in hex.
    Random(usize),
    /// `n` random characters of [A-Za-z0-9] whose ASCII codes are the key
    /// (about 5.95 bits each), for clients that take a key only as text
    /// (libcoap's coap-client before 4.3.5).
    Ascii(usize),
}

/// A key `psk add` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The key's bytes, as the handshake uses them.
    pub bytes: Vec<u8>,
    /// As written in the PSK file.
    pub stored: String,
    /// As printed: hex digits, or the characters of an ASCII key.
    pub shown: String,
}

/// Identities and their keys, as read from a PSK file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PskKeys {
    keys: BTreeMap<String, Arc<[u8]>>,
}

impl PskKeys {
    /// The key of `identity` as the client sent it.
    pub fn get(&self, identity: &[u8]) -> Option<&Arc<[u8]>> {
        let identity = std::str::from_utf8(identity).ok()?;
        self.keys.get(identity)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Identities in sorted order.
    pub fn identities(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &[u8])]) -> PskKeys {
        PskKeys {
            keys: pairs
                .iter()
                .map(|(i, k)| (i.to_string(), Arc::from(*k)))
                .collect(),
        }
    }
}

/// Reads `path`: `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<PskKeys>, ConfigErrors> {
    let fail = |message: String| ConfigErrors::single(path, "", message);
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(format!("cannot read: {e}"))),
        Ok(meta) => check_private(path, &meta).map_err(fail)?,
    }
    let text = read_text(path, MAX_PSK_FILE_BYTES).map_err(fail)?;
    parse(&text, path).map(Some)
}

/// Parses the text of a PSK file; `source` is the file named in problems.
pub fn parse(text: &str, source: &Path) -> Result<PskKeys, ConfigErrors> {
    let mut report = Report::new(source, text);
    let mut keys = BTreeMap::new();
    match document::parse(text) {
        Err(e) => report.add(e.span.as_ref(), "", e.message),
        Ok(root) => {
            let doc = document::Table::root(&root, &["psk"], &mut report);
            let table = doc.map("psk", &mut report);
            for identity in table.names() {
                let Some(value) = table.str(identity, &mut report) else {
                    continue;
                };
                if let Err(why) = check_identity(identity) {
                    report.at(&value, format!("the identity {why}"));
                    continue;
                }
                match decode_key(value.value) {
                    Ok(key) => {
                        keys.insert(identity.to_string(), Arc::from(key));
                    }
                    Err(why) => report.at(&value, why),
                }
            }
        }
    }
    if report.problems.is_empty() {
        return Ok(PskKeys { keys });
    }
    let mut problems = report.problems;
    problems.sort_by_key(|p| p.line);
    Err(ConfigErrors { problems })
}

/// An identity names a device in logs and fills `{identity}` as one topic
/// level, so it is held to the same rules as a topic level.
pub fn check_identity(identity: &str) -> Result<(), String> {
    if identity.is_empty() {
        return Err("is empty".into());
    }
    if identity.len() > MAX_IDENTITY_BYTES {
        return Err(format!("is longer than {MAX_IDENTITY_BYTES} bytes"));
    }
    if identity.contains(['/', '+', '#']) || identity.chars().any(char::is_control) {
        return Err(format!(
            "{identity:?} must not contain /, +, # or control characters: it fills {{identity}} \
             as one topic level"
        ));
    }
    Ok(())
}

/// `"ascii"`, `"hex:00ff.."` or `"base64:.."` to the key's bytes.
pub fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    let key = if let Some(hex) = text.strip_prefix("hex:") {
        decode_hex(hex).ok_or_else(|| {
            "is not valid hex after \"hex:\" (an even number of 0-9, a-f)".to_string()
        })?
    } else if let Some(b64) = text.strip_prefix("base64:") {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("is not valid base64 after \"base64:\": {e}"))?
    } else {
        if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(
                "holds characters that are not printable ASCII; write binary keys as \
                 \"hex:...\" or \"base64:...\""
                    .into(),
            );
        }
        text.as_bytes().to_vec()
    };
    if key.is_empty() {
        return Err("is an empty key".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("is a key longer than {MAX_KEY_BYTES} bytes"));
    }
    Ok(key)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "holds secret keys but is accessible to group or others (mode {mode:04o}); \
             run: chmod 600 {}",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

/// Why `psk add` did not add.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("{file}: the identity {identity:?} already exists; remove its line first to replace its key")]
    Exists { file: PathBuf, identity: String },
    #[error("the identity {0}")]
    InvalidIdentity(String),
    #[error("a key of {0} bytes: --bytes takes 1 to {MAX_GENERATED_KEY_BYTES}")]
    InvalidLength(usize),
    #[error("{file}: is not a valid PSK file: {why}")]
    Invalid { file: PathBuf, why: String },
    #[error("{file}: {why}")]
    Io { file: PathBuf, why: String },
}

const NEW_FILE: &str = "\
# coap2mqtt pre-shared keys: identity = key. Keep this file mode 0600.
# Add devices with `coap2mqtt psk add IDENTITY`; reload with SIGHUP.
[psk]
";

/// Adds `identity` with a new random key of `form` to the PSK file at
/// `path` (created if missing), keeping every other line; returns the key.
///
/// Atomic: the new file is written beside the old one with mode 0600 and
/// renamed over it, so a crash leaves either file whole.
pub fn add(path: &Path, identity: &str, form: KeyForm) -> Result<NewKey, AddError> {
    check_identity(identity).map_err(AddError::InvalidIdentity)?;
    let (KeyForm::Random(n) | KeyForm::Ascii(n)) = form;
    if !(1..=MAX_GENERATED_KEY_BYTES).contains(&n) {
        return Err(AddError::InvalidLength(n));
    }
    let io = |why: String| AddError::Io {
        file: path.to_path_buf(),
        why,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NEW_FILE.to_string(),
        Err(e) => return Err(io(format!("cannot read: {e}"))),
    };
    // Refuse to touch a file the daemon would refuse.
    parse(&text, path).map_err(|e| AddError::Invalid {
        file: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| AddError::Invalid {
        file: path.to_path_buf(),
        why: format!("{e}"),
    })?;
    let table = doc
        .entry("psk")
        .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
        .as_table_like_mut()
        .ok_or_else(|| AddError::Invalid {
            file: path.to_path_buf(),
            why: "psk is not a table".into(),
        })?;
    if table.contains_key(identity) {
        return Err(AddError::Exists {
            file: path.to_path_buf(),
            identity: identity.to_string(),
        });
    }
    let key = generate_key(form);
    table.insert(identity, toml_edit::value(key.stored.clone()));
    let mut text = doc.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    write_private(path, text.as_bytes()).map_err(io)?;
    Ok(key)
}

/// A new key of `form`, from the OS's CSPRNG.
pub fn generate_key(form: KeyForm) -> NewKey {
    use rand::Rng;
    match form {
        KeyForm::Random(n) => {
            let bytes: Vec<u8> = (0..n).map(|_| rand::rngs::OsRng.gen()).collect();
            let shown: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            NewKey {
                stored: format!("hex:{shown}"),
                shown,
                bytes,
            }
        }
        KeyForm::Ascii(n) => {
            let text: String = rand::rngs::OsRng
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(n)
                .map(char::from)
                .collect();
            NewKey {
                bytes: text.as_bytes().to_vec(),
                stored: text.clone(),
                shown: text,
            }
        }
    }
}

/// How each kind of client takes `key` for `identity`, for `psk add` to
/// print beside it.
pub fn usage(identity: &str, key: &NewKey) -> String {
    let n = key.bytes.len();
    let c_array = key
        .bytes
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect::<Vec<_>>()
        .join(", ");
    if key.stored.starts_with("hex:") {
        format!(
            "{identity}: a key of {n} random bytes, in hex. A device takes it as:\n\
             \x20 libcoap coap-client 4.3.5 or later:  -u {identity} -k 0x{hex}\n\
             \x20 aiocoap (credentials JSON):         \"psk\": {{\"hex\": \"{hex}\"}}, \"client-identity\": {{\"ascii\": \"{identity}\"}}\n\
             \x20 C (tinydtls, RIOT, Zephyr, ...):      {{{c_array}}} ({n} bytes)\n\
             libcoap before 4.3.5 takes a key only as text: add such a device with --ascii.",
            hex = key.shown
        )
    } else {
        format!(
            "{identity}: a key of {n} characters; the key is their ASCII codes. A device takes it as:\n\
             \x20 libcoap coap-client:                -u {identity} -k {text}\n\
             \x20 aiocoap (credentials JSON):         \"psk\": {{\"ascii\": \"{text}\"}}, \"client-identity\": {{\"ascii\": \"{identity}\"}}\n\
             \x20 C (tinydtls, RIOT, Zephyr, ...):      {{{c_array}}} ({n} bytes, no terminating NUL)",
            text = key.shown
        )
    }
}

/// Writes `bytes` to a new mode-0600 file beside `path`, then renames it
/// over `path`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| "is not a file name".to_string())?
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename is durable once the directory is.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(format!("cannot write: {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_names_every_client_with_the_same_bytes() {
        let key = NewKey {
            bytes: vec![0x0f, 0xa0],
            stored: "hex:0fa0".into(),
            shown: "0fa0".into(),
        };
        let text = usage("s1", &key);
        assert!(text.contains("-u s1 -k 0x0fa0"), "{text}");
        assert!(text.contains("\"psk\": {\"hex\": \"0fa0\"}"), "{text}");
        assert!(text.contains("{0x0f, 0xa0} (2 bytes)"), "{text}");
        let ascii = NewKey {
            bytes: b"Ab".to_vec(),
            stored: "Ab".into(),
            shown: "Ab".into(),
        };
        let text = usage("s1", &ascii);
        assert!(text.contains("-u s1 -k Ab\n"), "{text}");
        assert!(text.contains("{0x41, 0x62}"), "{text}");
    }

    fn parse_str(text: &str) -> Result<PskKeys, Vec<String>> {
        parse(text, Path::new("psk.toml"))
            .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn keys_are_ascii_hex_or_base64() {
        let keys = parse_str(
            "[psk]\n\"sensor-01\" = \"k3y\"\n\"sensor-02\" = \"hex:00ff10\"\n\"sensor-03\" = \"base64:AP8Q\"\n",
        )
        .expect("valid");
        assert_eq!(keys.get(b"sensor-01").map(|k| &k[..]), Some(&b"k3y"[..]));
        assert_eq!(
            keys.get(b"sensor-02").map(|k| &k[..]),
            Some(&[0, 255, 16][..])
        );
        assert_eq!(
            keys.get(b"sensor-03").map(|k| &k[..]),
            Some(&[0, 255, 16][..])
        );
        assert_eq!(keys.get(b"sensor-04"), None);
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn every_bad_entry_is_reported_with_its_line_and_key() {
        let problems = parse_str(
            "[psk]\n\"a\" = \"hex:0g\"\n\"b/c\" = \"x\"\n\"d\" = 5\n\"e\" = \"\"\n\"f\" = \"base64:!!\"\n",
        )
        .expect_err("invalid");
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(
            problems[0].starts_with("psk.toml:2: psk.a: is not valid hex"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("psk.toml:3: psk.b/c: the identity"),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("psk.toml:4: psk.d: expected a string"),
            "{problems:?}"
        );
        assert!(
            problems[3].contains(":5: psk.e: is an empty key"),
            "{problems:?}"
        );
        assert!(
            problems[4].contains(":6: psk.f: is not valid base64"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_unknown_table_is_an_error() {
        let problems = parse_str("[pks]\n").expect_err("invalid");
        assert!(
            problems[0].contains("unknown key; did you mean \"psk\"?"),
            "{problems:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_file_readable_by_others_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("psk.toml");
        std::fs::write(&path, "[psk]\na = \"b\"\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load(&path).expect_err("refused").to_string();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(load(&path).expect("valid").map(|k| k.len()), Some(1));
    }

    #[test]
    fn a_missing_file_holds_no_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(&dir.path().join("none.toml")).expect("ok"), None);
    }

    #[cfg(unix)]
    #[test]
    fn add_keeps_other_lines_writes_0600_and_refuses_a_duplicate() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("psk.toml");
        std::fs::write(&path, "# devices of hall 3\n[psk]\nold = \"k\"\n").expect("write");
        let key = add(&path, "sensor-01", KeyForm::Random(GENERATED_KEY_BYTES)).expect("added");
        assert_eq!(key.bytes.len(), 16);
        assert_eq!(key.shown.len(), 32);
        assert_eq!(key.stored, format!("hex:{}", key.shown));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# devices of hall 3\n"), "{text}");
        let keys = load(&path).expect("valid").expect("exists");
        assert_eq!(keys.get(b"old").map(|k| &k[..]), Some(&b"k"[..]));
        assert_eq!(keys.get(b"sensor-01").map(|k| &k[..]), Some(&key.bytes[..]));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            add(&path, "sensor-01", KeyForm::Random(16)),
            Err(AddError::Exists { .. })
        ));
        let ascii = add(&path, "sensor-02", KeyForm::Ascii(16)).expect("added");
        assert!(
            ascii.shown.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{ascii:?}"
        );
        assert_eq!(
            (ascii.bytes.len(), ascii.stored.as_str()),
            (16, ascii.shown.as_str())
        );
        let keys = load(&path).expect("valid").expect("exists");
        assert_eq!(
            keys.get(b"sensor-02").map(|k| &k[..]),
            Some(&ascii.bytes[..])
        );
        assert_eq!(
            add(&path, "sensor-03", KeyForm::Random(24))
                .expect("added")
                .bytes
                .len(),
            24
        );
        assert!(matches!(
            add(&path, "sensor-04", KeyForm::Random(65)),
            Err(AddError::InvalidLength(65))
        ));
    }
}
