//! How devices prove who they are: webrtc-dtls server configs for PSK and
//! for certificates, and the identity a finished handshake yields.
//!
//! One webrtc-dtls `Config` cannot hold PSK and certificates at once, so a
//! listener holds up to two and picks one per new peer from its ClientHello
//! ([`Credentials::for_hello`]): the first suite in the client's order of
//! preference that we offer decides. A client offering only PSK suites gets
//! the PSK config, one offering only ECDHE_ECDSA suites the certificate one.
//!
//! PSK keys are read through a `watch` channel at each handshake, so a
//! reloaded PSK file applies to the next handshake without a restart.

use super::prefilter::ClientHello;
use crate::config::psk::PskKeys;
use crate::config::{CertificateFiles, CipherSuite};
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use tokio::sync::watch;
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{ClientAuthType, Config, ExtendedMasterSecretType};
use webrtc_dtls::crypto::{Certificate, CryptoPrivateKey};

/// Which kind of credential a session was authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Psk,
    Certificate,
}

/// A listener's server configs, each with the suites it offers.
#[derive(Clone)]
pub struct Credentials {
    psk: Option<(Config, Vec<u16>)>,
    certificate: Option<(Config, Vec<u16>)>,
    pub(super) keys: watch::Receiver<Arc<PskKeys>>,
}

impl Credentials {
    /// PSK when `psk_suites` is not empty (keys from `keys`), certificates
    /// when `certificate` is given; at least one of them.
    pub fn new(
        keys: watch::Receiver<Arc<PskKeys>>,
        psk_suites: &[CipherSuite],
        certificate: Option<(&CertificateFiles, &[CipherSuite])>,
    ) -> anyhow::Result<Credentials> {
        let psk = (!psk_suites.is_empty())
            .then(|| (psk_config(keys.clone(), psk_suites), codes(psk_suites)));
        let certificate = match certificate {
            Some((files, suites)) => Some((certificate_config(files, suites)?, codes(suites))),
            None => None,
        };
        Ok(Credentials {
            psk,
            certificate,
            keys,
        })
    }

    /// The config for a new peer: the first suite in the client's order
    /// that one of our configs offers. `None`: nothing in common.
    pub(super) fn for_hello(&self, hello: &ClientHello<'_>) -> Option<(Mode, Config)> {
        hello.suites().find_map(|suite| {
            if let Some((config, codes)) = &self.psk {
                if codes.contains(&suite) {
                    return Some((Mode::Psk, config.clone()));
                }
            }
            match &self.certificate {
                Some((config, codes)) if codes.contains(&suite) => {
                    Some((Mode::Certificate, config.clone()))
                }
                _ => None,
            }
        })
    }
}

fn codes(suites: &[CipherSuite]) -> Vec<u16> {
    suites.iter().map(|s| s.code()).collect()
}

fn suite_id(suite: CipherSuite) -> CipherSuiteId {
    match suite {
        CipherSuite::PskAes128Ccm8 => CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
        CipherSuite::PskAes128Ccm => CipherSuiteId::Tls_Psk_With_Aes_128_Ccm,
        CipherSuite::PskAes128GcmSha256 => CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
        CipherSuite::EcdheEcdsaAes128Ccm8 => CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Ccm_8,
        CipherSuite::EcdheEcdsaAes128GcmSha256 => {
            CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256
        }
    }
}

fn psk_config(keys: watch::Receiver<Arc<PskKeys>>, suites: &[CipherSuite]) -> Config {
    Config {
        // On a server the callback gets the identity the client sent in its
        // ClientKeyExchange (the crate calls it a hint).
        psk: Some(Arc::new(move |identity: &[u8]| {
            keys.borrow()
                .get(identity)
                .map(|k| k.to_vec())
                .ok_or_else(|| {
                    webrtc_dtls::Error::Other(format!(
                        "unknown PSK identity {:?}",
                        String::from_utf8_lossy(identity)
                    ))
                })
        })),
        // No hint: no ServerKeyExchange, as RFC 4279 allows.
        psk_identity_hint: None,
        cipher_suites: suites.iter().copied().map(suite_id).collect(),
        extended_master_secret: ExtendedMasterSecretType::Request,
        ..Default::default()
    }
}

fn certificate_config(files: &CertificateFiles, suites: &[CipherSuite]) -> anyhow::Result<Config> {
    let read_chain = |path: &std::path::Path, what: &str| {
        let chain = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("dtls.{what}: cannot read {}", path.display()))?;
        if chain.is_empty() {
            anyhow::bail!("dtls.{what}: {} holds no PEM certificate", path.display());
        }
        Ok(chain)
    };
    let chain = read_chain(&files.certificate, "certificate")?;
    let key_pem = std::fs::read_to_string(&files.private_key).with_context(|| {
        format!(
            "dtls.private_key: cannot read {}",
            files.private_key.display()
        )
    })?;
    // Certificate::from_pem wants a tag of its own; rcgen reads the PKCS#8
    // ("BEGIN PRIVATE KEY") files openssl writes.
    let key_pair = rcgen::KeyPair::from_pem(&key_pem).with_context(|| {
        format!(
            "dtls.private_key: {} is not a PKCS#8 PEM key (openssl genpkey -algorithm EC \
             -pkeyopt ec_paramgen_curve:P-256 writes one)",
            files.private_key.display()
        )
    })?;
    let private_key = CryptoPrivateKey::from_key_pair(&key_pair).with_context(|| {
        format!(
            "dtls.private_key: {} is not an ECDSA P-256 key",
            files.private_key.display()
        )
    })?;
    let mut client_cas = rustls::RootCertStore::empty();
    for ca in read_chain(&files.client_ca, "client_ca")? {
        client_cas
            .add(ca)
            .with_context(|| format!("dtls.client_ca: {}", files.client_ca.display()))?;
    }
    Ok(Config {
        certificates: vec![Certificate {
            certificate: chain,
            private_key,
        }],
        cipher_suites: suites.iter().copied().map(suite_id).collect(),
        client_auth: ClientAuthType::RequireAndVerifyClientCert,
        client_cas,
        extended_master_secret: ExtendedMasterSecretType::Request,
        ..Default::default()
    })
}

/// The subject CN of a DER certificate.
pub(super) fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}
