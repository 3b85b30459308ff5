//! How devices prove who they are: one rtc-dtls server config holding the
//! PSK keys and the certificate, and which of them a hello will use.
//!
//! rtc-dtls serves PSK and ECDHE_ECDSA clients from one config: the first
//! suite in the client's order of preference that we offer decides, and so
//! which credential the handshake uses ([`Credentials::mode_for`] tells it
//! ahead, for the logs, and refuses hellos with nothing in common before
//! anything is spent on them).
//!
//! PSK keys are read through a `watch` channel at each handshake, so a
//! reloaded PSK file applies to the next handshake without a restart.

use super::prefilter::ClientHello;
use super::{handoff, private_key};
use crate::config::psk::PskKeys;
use crate::config::{CertificateFiles, CipherSuite};
use anyhow::Context;
use rtc_dtls::cipher_suite::CipherSuiteId;
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc_dtls::crypto::{Certificate, CryptoPrivateKey};
use rtc_dtls::crypto_provider::SignatureScheme;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use tokio::sync::watch;

/// Which kind of credential a session is authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Psk,
    Certificate,
}

/// A listener's server config and the suites it offers.
#[derive(Clone)]
pub struct Credentials {
    pub(super) config: Arc<HandshakeConfig>,
    offers: Vec<(u16, Mode)>,
}

impl Credentials {
    /// PSK when `psk_suites` is not empty (keys from `keys`), certificates
    /// when `certificate` is given; at least one of them.
    pub fn new(
        keys: watch::Receiver<Arc<PskKeys>>,
        psk_suites: &[CipherSuite],
        certificate: Option<(&CertificateFiles, &[CipherSuite])>,
    ) -> anyhow::Result<Credentials> {
        let provider = handoff::provider();
        let mut offers: Vec<(u16, Mode)> =
            psk_suites.iter().map(|s| (s.code(), Mode::Psk)).collect();
        let mut builder = ConfigBuilder::default()
            .with_crypto_provider(provider.clone())
            // No hint: no ServerKeyExchange, as RFC 4279 allows.
            .with_psk_identity_hint(None)
            .with_extended_master_secret(ExtendedMasterSecretType::Request)
            // Only a client checks a server's certificate with this; set,
            // the server config is spared building a verifier it never uses.
            .with_insecure_skip_verify(true);
        if !psk_suites.is_empty() {
            builder = builder.with_psk(Some(Arc::new(move |identity: &[u8]| {
                // On a server the callback gets the identity the client sent
                // in its ClientKeyExchange (the crate calls it a hint).
                keys.borrow()
                    .get(identity)
                    .map(|k| k.to_vec())
                    .ok_or_else(|| {
                        rtc_shared::error::Error::Other(format!(
                            "unknown PSK identity {:?}",
                            String::from_utf8_lossy(identity)
                        ))
                    })
            })));
        }
        if let Some((files, suites)) = certificate {
            let (chain, key) = read_certificate(files, provider.crypto())?;
            builder = builder
                .with_certificates(vec![Certificate {
                    certificate: chain,
                    private_key: key,
                }])
                .with_client_auth(ClientAuthType::RequireAndVerifyClientCert)
                .with_client_cas(read_client_cas(files)?);
            offers.extend(suites.iter().map(|s| (s.code(), Mode::Certificate)));
        }
        builder = builder.with_cipher_suites(
            offers
                .iter()
                .map(|&(code, _)| CipherSuiteId::from(code))
                .collect(),
        );
        let config = builder
            .build(false, None)
            .map_err(|e| anyhow::anyhow!("dtls: cannot make the DTLS server config: {e}"))?;
        Ok(Credentials {
            config: Arc::new(config),
            offers,
        })
    }

    /// The credential a new peer's handshake will use: that of the first
    /// suite in the client's order that we offer. `None`: nothing in common.
    pub(super) fn mode_for(&self, hello: &ClientHello<'_>) -> Option<Mode> {
        hello.suites().find_map(|suite| {
            self.offers
                .iter()
                .find(|(code, _)| *code == suite)
                .map(|&(_, mode)| mode)
        })
    }
}

fn read_chain(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("dtls.{what}: cannot read {}", path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("dtls.{what}: {} holds no PEM certificate", path.display());
    }
    Ok(chain)
}

fn read_certificate(
    files: &CertificateFiles,
    crypto: &dyn rtc_dtls::crypto_provider::RTCCrypto,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, CryptoPrivateKey)> {
    let chain = read_chain(&files.certificate, "certificate")?;
    let path = &files.private_key;
    let pem = std::fs::read(path)
        .with_context(|| format!("dtls.private_key: cannot read {}", path.display()))?;
    let pkcs8 = private_key::p256_pkcs8(&pem).map_err(|found| {
        anyhow::anyhow!(
            "dtls.private_key: {} holds {found}; coap2mqtt takes {}",
            path.display(),
            private_key::WHAT_WORKS
        )
    })?;
    let signing_key = crypto
        .import_signing_key(SignatureScheme::EcdsaP256Sha256, &pkcs8)
        .map_err(|e| {
            anyhow::anyhow!(
                "dtls.private_key: {} is a P-256 key the crypto library refuses ({e}); \
                 coap2mqtt takes {}",
                path.display(),
                private_key::WHAT_WORKS
            )
        })?;
    Ok((chain, CryptoPrivateKey::from_signing_key(signing_key)))
}

fn read_client_cas(files: &CertificateFiles) -> anyhow::Result<rustls::RootCertStore> {
    let mut client_cas = rustls::RootCertStore::empty();
    for ca in read_chain(&files.client_ca, "client_ca")? {
        client_cas
            .add(ca)
            .with_context(|| format!("dtls.client_ca: {}", files.client_ca.display()))?;
    }
    Ok(client_cas)
}

/// The subject CN of a DER certificate.
pub(super) fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}
