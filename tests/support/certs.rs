//! Throw-away X.509 material for TLS tests, made with the `openssl` CLI.
//!
//! Why the CLI: the tests must not trust the same code the daemon uses to
//! read certificates, and openssl is what an operator would use. All keys
//! are EC P-256 in PKCS#8 PEM ("BEGIN PRIVATE KEY"), which mosquitto,
//! libcoap and rustls all accept.
//!
//! Layout: a test CA signs a server certificate (CN=localhost, SAN
//! DNS:localhost and IP:127.0.0.1) and a client certificate
//! (CN=coap2mqtt-test). A second, unrelated "wrong" CA signs a client
//! certificate of the same name, for tests that must be rejected.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Paths of the generated files; they live as long as the directory given
/// to [`Certs::generate`].
#[derive(Debug, Clone)]
pub struct Certs {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing the broker or daemon trusts.
    pub wrong_ca_cert: PathBuf,
    pub wrong_ca_key: PathBuf,
    /// Signed by the wrong CA, CN=coap2mqtt-test like the right one.
    pub wrong_client_cert: PathBuf,
    pub wrong_client_key: PathBuf,
}

/// The client certificate's common name.
pub const CLIENT_CN: &str = "coap2mqtt-test";

impl Certs {
    /// Generates everything into `dir` (created if missing). Panics with
    /// openssl's output if any step fails.
    pub fn generate(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let p = |name: &str| dir.join(name);
        let certs = Certs {
            dir: dir.to_path_buf(),
            ca_cert: p("ca.crt"),
            ca_key: p("ca.key"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
            wrong_ca_cert: p("wrong-ca.crt"),
            wrong_ca_key: p("wrong-ca.key"),
            wrong_client_cert: p("wrong-client.crt"),
            wrong_client_key: p("wrong-client.key"),
        };

        make_ca(&certs.ca_key, &certs.ca_cert, "coap2mqtt test CA");
        make_ca(
            &certs.wrong_ca_key,
            &certs.wrong_ca_cert,
            "coap2mqtt wrong CA",
        );

        let server_ext = "basicConstraints=CA:FALSE\n\
                          keyUsage=critical,digitalSignature,keyAgreement\n\
                          extendedKeyUsage=serverAuth\n\
                          subjectAltName=DNS:localhost,IP:127.0.0.1\n";
        let client_ext = "basicConstraints=CA:FALSE\n\
                          keyUsage=critical,digitalSignature,keyAgreement\n\
                          extendedKeyUsage=clientAuth\n";
        make_leaf(
            &certs,
            "server",
            "localhost",
            server_ext,
            (&certs.ca_cert, &certs.ca_key),
        );
        make_leaf(
            &certs,
            "client",
            CLIENT_CN,
            client_ext,
            (&certs.ca_cert, &certs.ca_key),
        );
        make_leaf(
            &certs,
            "wrong-client",
            CLIENT_CN,
            client_ext,
            (&certs.wrong_ca_cert, &certs.wrong_ca_key),
        );
        certs
    }
}

fn make_key(key: &Path) {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path_str(key),
    ]);
}

fn make_ca(key: &Path, cert: &Path, cn: &str) {
    make_key(key);
    let subject = format!("/CN={cn}");
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        path_str(key),
        "-sha256",
        "-days",
        "3650",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        path_str(cert),
    ]);
}

/// Key, CSR and certificate `<name>.key/.csr/.crt` signed by `issuer`.
fn make_leaf(certs: &Certs, name: &str, cn: &str, extensions: &str, issuer: (&Path, &Path)) {
    let key = certs.dir.join(format!("{name}.key"));
    let csr = certs.dir.join(format!("{name}.csr"));
    let crt = certs.dir.join(format!("{name}.crt"));
    let ext = certs.dir.join(format!("{name}.ext"));
    std::fs::write(&ext, extensions).unwrap_or_else(|e| panic!("write {}: {e}", ext.display()));
    make_key(&key);
    let subject = format!("/CN={cn}");
    openssl(&[
        "req",
        "-new",
        "-key",
        path_str(&key),
        "-subj",
        &subject,
        "-out",
        path_str(&csr),
    ]);
    // A random serial per certificate: no .srl files shared between issuers.
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&csr),
        "-CA",
        path_str(issuer.0),
        "-CAkey",
        path_str(issuer.1),
        "-set_serial",
        &random_serial(),
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        path_str(&ext),
        "-out",
        path_str(&crt),
    ]);
}

fn random_serial() -> String {
    format!("0x{:016x}", rand::random::<u64>() >> 1)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

pub fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run the openssl CLI (is openssl installed?)");
    assert!(
        output.status.success(),
        "openssl {} failed with {}:\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
