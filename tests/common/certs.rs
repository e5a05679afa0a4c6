//! Certificates for TLS tests, made by openssl: self-signed ones (a client
//! trusts the certificate itself) and a small CA that signs server and
//! client certificates (for servers, such as etcd, that check clients).

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(args: &[&str], paths: &[(&str, &Path)]) {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    for (flag, p) in paths {
        cmd.arg(flag).arg(p);
    }
    let out = cmd.output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A self-signed certificate for 127.0.0.1 with its key: `(cert, key)`.
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(EC_KEY);
    let subj = format!("/CN={name}");
    args.extend(["-subj", &subj, "-addext", "subjectAltName=IP:127.0.0.1"]);
    openssl(&args, &[("-keyout", &key), ("-out", &cert)]);
    (cert, key)
}

/// A certificate authority in `dir`.
pub struct TestCa {
    dir: PathBuf,
    /// The CA's certificate (what clients and servers trust).
    pub cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    /// Makes a CA named `name`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend(EC_KEY);
        let subj = format!("/CN={name}");
        args.extend(["-subj", &subj, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
        openssl(&args, &[("-keyout", &key), ("-out", &cert)]);
        TestCa { dir: dir.to_path_buf(), cert, key }
    }

    /// A certificate for 127.0.0.1 signed by this CA, usable by a server
    /// and as a client certificate: `(cert, key)`.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key, csr) =
            (self.dir.join(format!("{name}.crt")), self.dir.join(format!("{name}.key")), self.dir.join(format!("{name}.csr")));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend(EC_KEY);
        let subj = format!("/CN={name}");
        args.extend(["-subj", &subj]);
        openssl(&args, &[("-keyout", &key), ("-out", &csr)]);
        openssl(
            &["x509", "-req", "-days", "2", "-CAcreateserial"],
            &[("-in", &csr), ("-CA", &self.cert), ("-CAkey", &self.key), ("-extfile", &ext), ("-out", &cert)],
        );
        (cert, key)
    }
}
