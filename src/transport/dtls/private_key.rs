//! The server's private key file, as operators make it.
//!
//! The ECDHE_ECDSA suites need an ECDSA key on P-256. openssl writes one in
//! two PEM forms, both taken here: SEC1 (`-----BEGIN EC PRIVATE KEY-----`,
//! from `openssl ecparam -name prime256v1 -genkey -noout`) and PKCS#8
//! (`-----BEGIN PRIVATE KEY-----`, from `openssl genpkey -algorithm EC
//! -pkeyopt ec_paramgen_curve:P-256`). The crypto library imports PKCS#8
//! only, so a SEC1 key is wrapped into PKCS#8 here (RFC 5915 §3 in RFC 5208's
//! PrivateKeyInfo). Anything else (RSA, Ed25519, other curves, encrypted
//! keys) is refused with what was found and what works.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;

/// What works, for every refusal.
pub(super) const WHAT_WORKS: &str = "an ECDSA key on curve P-256 (prime256v1, secp256r1) in PEM, \
    either SEC1 (\"BEGIN EC PRIVATE KEY\", from `openssl ecparam -name prime256v1 -genkey -noout`) \
    or PKCS#8 (\"BEGIN PRIVATE KEY\", from `openssl genpkey -algorithm EC -pkeyopt \
    ec_paramgen_curve:P-256`), unencrypted";

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const PARAMETERS: u8 = 0xa0; // [0] in ECPrivateKey

/// The PKCS#8 DER of the P-256 key in `pem`, or why not (to follow "holds").
pub(super) fn p256_pkcs8(pem: &[u8]) -> Result<Vec<u8>, String> {
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        if contains(pem, b"ENCRYPTED PRIVATE KEY") {
            "an encrypted key".to_string()
        } else {
            "no PEM private key".to_string()
        }
    })?;
    match key {
        PrivateKeyDer::Pkcs8(der) => {
            let der = der.secret_pkcs8_der();
            match pkcs8_algorithm(der) {
                Some((OID_EC_PUBLIC_KEY, Some(OID_P256))) => Ok(der.to_vec()),
                Some((OID_EC_PUBLIC_KEY, curve)) => {
                    Err(format!("an EC key on {}", curve_name(curve)))
                }
                Some((algorithm, _)) => Err(algorithm_name(algorithm)),
                None => Err("a PKCS#8 key that cannot be read".into()),
            }
        }
        PrivateKeyDer::Sec1(der) => {
            let der = der.secret_sec1_der();
            match sec1_curve(der) {
                Some(Some(OID_P256)) => Ok(wrap_sec1(der)),
                Some(curve) => Err(format!("an EC key on {}", curve_name(curve))),
                None => Err("a SEC1 key that cannot be read".into()),
            }
        }
        PrivateKeyDer::Pkcs1(_) => Err("an RSA key".into()),
        _ => Err("a key of a kind not known".into()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn curve_name(curve: Option<&[u8]>) -> String {
    match curve {
        Some(OID_P256) => "P-256".into(),
        Some(OID_P384) => "P-384 (secp384r1)".into(),
        Some(OID_P521) => "P-521 (secp521r1)".into(),
        Some(OID_SECP256K1) => "secp256k1".into(),
        Some(other) => format!("a curve with OID {}", oid_text(other)),
        None => "a curve it does not name".into(),
    }
}

fn algorithm_name(oid: &[u8]) -> String {
    match oid {
        OID_RSA => "an RSA key".into(),
        OID_ED25519 => "an Ed25519 key".into(),
        OID_ED448 => "an Ed448 key".into(),
        other => format!("a key of algorithm OID {}", oid_text(other)),
    }
}

fn oid_text(oid: &[u8]) -> String {
    let Some((&first, rest)) = oid.split_first() else {
        return String::new();
    };
    let mut arcs = vec![u64::from(first / 40), u64::from(first % 40)];
    let mut value = 0u64;
    for &b in rest {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(value);
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// One DER element at the start of `input`: (tag, contents, rest).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 {
            return None;
        }
        let bytes = input.get(..n)?;
        let len = bytes.iter().fold(0usize, |l, &b| (l << 8) | usize::from(b));
        (len, &input[n..])
    };
    let contents = input.get(..len)?;
    Some((tag, contents, &input[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = element(input)?;
    (t == tag).then_some((contents, rest))
}

/// PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier { algorithm,
/// parameters }, privateKey }: (algorithm, the curve when a named one).
fn pkcs8_algorithm(der: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (info, _) = expect(der, SEQUENCE)?;
    let (_version, info) = expect(info, INTEGER)?;
    let (algorithm_id, _) = expect(info, SEQUENCE)?;
    let (algorithm, parameters) = expect(algorithm_id, OID)?;
    let curve = expect(parameters, OID).map(|(curve, _)| curve);
    Some((algorithm, curve))
}

/// ECPrivateKey ::= SEQUENCE { version 1, privateKey, [0] parameters
/// OPTIONAL, [1] publicKey OPTIONAL }: `Some(curve)` when readable.
fn sec1_curve(der: &[u8]) -> Option<Option<&[u8]>> {
    let (key, _) = expect(der, SEQUENCE)?;
    let (_version, key) = expect(key, INTEGER)?;
    let (_private, key) = expect(key, OCTET_STRING)?;
    Some(
        expect(key, PARAMETERS)
            .and_then(|(parameters, _)| expect(parameters, OID))
            .map(|(curve, _)| curve),
    )
}

fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.push(0x82);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(contents);
    out
}

/// The PKCS#8 PrivateKeyInfo holding a SEC1 P-256 key.
fn wrap_sec1(sec1: &[u8]) -> Vec<u8> {
    let mut algorithm = tlv(OID, OID_EC_PUBLIC_KEY);
    algorithm.extend(tlv(OID, OID_P256));
    let mut info = tlv(INTEGER, &[0]);
    info.extend(tlv(SEQUENCE, &algorithm));
    info.extend(tlv(OCTET_STRING, sec1));
    tlv(SEQUENCE, &info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(label: &str, der: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n").into_bytes()
    }

    #[test]
    fn a_pkcs8_p256_key_passes_as_it_is() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let der = key.serialize_der();
        assert_eq!(p256_pkcs8(key.serialize_pem().as_bytes()), Ok(der));
    }

    #[test]
    fn a_sec1_key_is_wrapped_and_other_curves_are_named() {
        // A SEC1 key: version, private key, [0] curve, [1] public key.
        let sec1 = |curve: &[u8]| {
            let mut key = tlv(INTEGER, &[1]);
            key.extend(tlv(OCTET_STRING, &[7; 32]));
            key.extend(tlv(PARAMETERS, &tlv(OID, curve)));
            key.extend(tlv(0xa1, &[0; 66]));
            tlv(SEQUENCE, &key)
        };
        let der = sec1(OID_P256);
        let wrapped = p256_pkcs8(&pem("EC PRIVATE KEY", &der)).expect("P-256");
        assert_eq!(
            pkcs8_algorithm(&wrapped),
            Some((OID_EC_PUBLIC_KEY, Some(OID_P256)))
        );
        assert!(wrapped.ends_with(&der));
        let err = p256_pkcs8(&pem("EC PRIVATE KEY", &sec1(OID_P384))).expect_err("P-384");
        assert_eq!(err, "an EC key on P-384 (secp384r1)");
    }

    #[test]
    fn other_keys_are_refused_by_name() {
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        assert_eq!(
            p256_pkcs8(ed.serialize_pem().as_bytes()),
            Err("an Ed25519 key".into())
        );
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        assert_eq!(
            p256_pkcs8(p384.serialize_pem().as_bytes()),
            Err("an EC key on P-384 (secp384r1)".into())
        );
        assert_eq!(
            p256_pkcs8(&pem("RSA PRIVATE KEY", &tlv(SEQUENCE, &[]))),
            Err("an RSA key".into())
        );
        assert_eq!(
            p256_pkcs8(&pem("ENCRYPTED PRIVATE KEY", &tlv(SEQUENCE, &[]))),
            Err("an encrypted key".into())
        );
        assert_eq!(p256_pkcs8(b"hello"), Err("no PEM private key".into()));
        assert_eq!(oid_text(OID_P256), "1.2.840.10045.3.1.7");
    }
}
