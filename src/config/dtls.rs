//! The `[dtls]` section: CoAP over DTLS 1.2 with pre-shared keys and/or
//! certificates.
//!
//! DTLS is on when the section names credentials (`psk_file`,
//! `certificate`); then `listen` defaults to every interface on port 5684.
//! Without credentials the section must not ask for listeners, since a
//! DTLS listener that can authenticate nobody is a mistake, not a choice.

use super::document::{Report, Table};
use super::sections::{addresses, number, path};
use super::{CertificateFiles, CipherSuite, DtlsConfig};
use std::net::SocketAddr;

pub(super) const DTLS_KEYS: &[&str] = &[
    "listen",
    "psk_file",
    "certificate",
    "private_key",
    "client_ca",
    "cipher_suites",
    "handshake_timeout_s",
    "idle_timeout_s",
    "max_sessions",
    "max_handshakes",
    "new_peers_per_s",
];

const CERT_KEYS: [&str; 3] = ["certificate", "private_key", "client_ca"];

pub(super) fn read(t: &Table, r: &mut Report) -> DtlsConfig {
    let psk_file = path(t, "psk_file", r);
    let certificate = certificate_files(t, r);
    let has_credentials = t.contains("psk_file") || t.contains("certificate");
    let default_listen = if has_credentials {
        vec![SocketAddr::from(([0, 0, 0, 0], 5684))]
    } else {
        Vec::new()
    };
    let listen = addresses(t, "listen", default_listen, r);
    if !has_credentials && !listen.is_empty() {
        r.add(
            t.span_of("listen").as_ref(),
            t.key("listen"),
            "needs dtls.psk_file or dtls.certificate: a DTLS listener must have credentials \
             to authenticate devices",
        );
    }
    let cipher_suites = cipher_suites(t, psk_file.is_some(), certificate.is_some(), r);
    let max_sessions = number(t, "max_sessions", 4096, 1..=1_000_000, r);
    let max_handshakes = number(t, "max_handshakes", 256, 1..=1_000_000, r);
    DtlsConfig {
        listen,
        psk_file,
        certificate,
        cipher_suites,
        handshake_timeout_s: number(t, "handshake_timeout_s", 10, 1..=3600, r),
        idle_timeout_s: number(t, "idle_timeout_s", 600, 1..=i64::from(u32::MAX), r),
        max_sessions,
        max_handshakes,
        new_peers_per_s: number(t, "new_peers_per_s", 1000, 1..=1_000_000, r),
    }
}

/// `certificate`, `private_key` and `client_ca` go together.
fn certificate_files(t: &Table, r: &mut Report) -> Option<CertificateFiles> {
    let certificate = path(t, "certificate", r);
    let private_key = path(t, "private_key", r);
    let client_ca = path(t, "client_ca", r);
    let present: Vec<&str> = CERT_KEYS.into_iter().filter(|k| t.contains(k)).collect();
    if present.is_empty() {
        return None;
    }
    if present.len() < CERT_KEYS.len() {
        let missing: Vec<String> = CERT_KEYS
            .iter()
            .filter(|k| !present.contains(k))
            .map(|k| format!("dtls.{k}"))
            .collect();
        r.add(
            t.span_of(present[0]).as_ref(),
            t.key(present[0]),
            format!(
                "needs {} too: certificate mode takes the server's certificate, its key, and \
                 the CA that signs the devices' certificates",
                missing.join(" and ")
            ),
        );
        return None;
    }
    Some(CertificateFiles {
        certificate: certificate?,
        private_key: private_key?,
        client_ca: client_ca?,
    })
}

fn cipher_suites(t: &Table, psk: bool, certificates: bool, r: &mut Report) -> Vec<CipherSuite> {
    let Some(list) = t.strings("cipher_suites", r) else {
        return CipherSuite::ALL.to_vec();
    };
    let mut suites = Vec::new();
    for item in &list.value {
        match CipherSuite::from_name(item.value) {
            Some(suite) if suites.contains(&suite) => {
                r.at(item, format!("{} is listed twice", item.value))
            }
            Some(suite) => suites.push(suite),
            None => r.at(
                item,
                format!(
                    "unknown cipher suite {:?}; expected one of {}",
                    item.value,
                    CipherSuite::ALL
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
    let valid_items = list
        .value
        .iter()
        .all(|i| CipherSuite::from_name(i.value).is_some());
    if valid_items && psk && !suites.iter().any(|s| s.is_psk()) {
        r.at(
            &list,
            "has no TLS_PSK_* suite, but dtls.psk_file is set: no device could use its key",
        );
    }
    if valid_items && certificates && !suites.iter().any(|s| !s.is_psk()) {
        r.at(
            &list,
            "has no TLS_ECDHE_ECDSA_* suite, but dtls.certificate is set: no device could use \
             a certificate",
        );
    }
    suites
}
