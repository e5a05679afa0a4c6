//! TLS on the liaison's client ports (`--tls-cert`, `--tls-key`): rustls
//! with a certificate that is reloaded when its files change, so renewing
//! a certificate (certbot, cert-manager) needs no restart. Connections
//! already open keep the certificate they were made with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The certificate and key files, and what was last loaded from them.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
    /// Modification times of the files when last loaded.
    loaded: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

/// The certificate handshakes use now.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("cert lock").clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a PEM certificate chain and private key; the error names the file.
fn load(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let signing = provider.key_provider.load_private_key(der).map_err(|e| format!("{}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(certified))
}

impl Tls {
    /// Loads the certificate and key; fails naming the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamp = (modified(cert), modified(key));
        let current = load(&provider, cert, key)?;
        Ok(Arc::new(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: Arc::new(CurrentCert(RwLock::new(current))),
            loaded: std::sync::Mutex::new(stamp),
        }))
    }

    /// An acceptor for one port, offering these ALPN protocols (`h2` for
    /// gRPC; `h2` and `http/1.1` for HTTP).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<TlsAcceptor, String> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.current.clone());
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(cfg)))
    }

    /// Loads the files again if either changed since the last load; true if
    /// a new certificate is now in use. A failed load keeps the old one (a
    /// half-written pair is retried at the next check).
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let stamp = (modified(&self.cert), modified(&self.key));
        if *self.loaded.lock().expect("stamp lock") == stamp {
            return Ok(false);
        }
        let fresh = load(&self.provider, &self.cert, &self.key)?;
        *self.current.0.write().expect("cert lock") = fresh;
        *self.loaded.lock().expect("stamp lock") = stamp;
        Ok(true)
    }

    /// Checks the files every [`RELOAD_CHECK_EVERY`] until the process ends.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_CHECK_EVERY).await;
                let Some(tls) = tls.upgrade() else { break };
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!(cert = %tls.cert.display(), "reloaded the TLS certificate"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "the changed TLS certificate could not be loaded; keeping the previous one"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (cert, key)
    }

    #[test]
    fn a_mismatched_or_missing_pair_is_refused_and_a_half_renewal_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_key) = self_signed(dir.path(), "a");
        let (b, b_key) = self_signed(dir.path(), "b");
        assert!(Tls::load(&a, &b_key).unwrap_err().contains("a.crt and"), "a certificate with another's key");
        assert!(Tls::load(&dir.path().join("none.crt"), &a_key).unwrap_err().contains("none.crt"));
        std::fs::write(dir.path().join("empty.crt"), "").unwrap();
        assert!(Tls::load(&dir.path().join("empty.crt"), &a_key).unwrap_err().contains("no certificate"));

        let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
        std::fs::copy(&a, &cert).unwrap();
        std::fs::copy(&a_key, &key).unwrap();
        let tls = Tls::load(&cert, &key).unwrap();
        let served = || tls.current.0.read().unwrap().cert[0].clone();
        let first = served();
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed");
        // Only the key renewed so far: refused, the old pair stays.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::copy(&b_key, &key).unwrap();
        assert!(tls.reload_if_changed().is_err());
        assert_eq!(served(), first);
        // Then the certificate: the new pair is served.
        std::fs::copy(&b, &cert).unwrap();
        assert!(tls.reload_if_changed().unwrap());
        assert_ne!(served(), first);
    }
}
