//! TLS for the carrier: the rendezvous's certificate (from files, or a
//! self-signed pair it creates once and keeps in its home, so that the
//! fingerprint agents pin stays the same across restarts), and the
//! agent's trust: the system's roots, a CA file, or a pinned SHA-256
//! fingerprint of the certificate.
//!
//! TLS here only gets datagrams through networks that pass nothing else;
//! the agent authenticates the rendezvous inside, by its pinned Noise key,
//! whatever certificate it was shown.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The self-signed certificate's file in the rendezvous's home.
pub const SELF_SIGNED_CERT: &str = "carrier-cert.pem";
/// Its key (mode 0600).
pub const SELF_SIGNED_KEY: &str = "carrier-key.pem";

/// rustls's ring provider. rustls marks it deprecated because ring has no
/// post-quantum key exchange; the outer TLS only carries datagrams that
/// are end-to-end Noise-encrypted already, and ring keeps the build free
/// of aws-lc's C toolchain.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 of a DER certificate, as 64 lower-case hex digits: what
/// `--tls-pin` takes.
pub fn fingerprint(cert: &[u8]) -> String {
    Sha256::digest(cert)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A pin as given (hex, any case, colons allowed) in canonical form.
pub fn parse_pin(pin: &str) -> Result<String, String> {
    let hex: String = pin
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("a TLS pin is the certificate's SHA-256: 64 hex digits".into());
    }
    Ok(hex)
}

/// The rendezvous's TLS identity.
#[derive(Clone)]
pub struct ServerTls {
    /// What new connections use.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate's fingerprint, for agents to pin.
    pub fingerprint: String,
    /// Where it came from (for the log).
    pub source: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .finish()
    }
}

/// Where the rendezvous's certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// PEM files: the chain and its key (reloaded on SIGHUP).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A self-signed pair kept in this directory, created if missing.
    SelfSigned(PathBuf),
}

impl CertSource {
    /// Loads (or creates) the identity.
    pub fn load(&self) -> Result<ServerTls, String> {
        match self {
            CertSource::Files { cert, key } => {
                let chain = read_chain(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("cannot read the TLS key {}: {e}", key.display()))?;
                server_tls(chain, key, cert.display().to_string())
            }
            CertSource::SelfSigned(dir) => self_signed(dir),
        }
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(chain)
}

fn server_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    source: String,
) -> Result<ServerTls, String> {
    let fingerprint = fingerprint(&chain[0]);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the TLS certificate and key do not fit: {e}"))?;
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
        source,
    })
}

fn self_signed(dir: &Path) -> Result<ServerTls, String> {
    let cert_path = dir.join(SELF_SIGNED_CERT);
    let key_path = dir.join(SELF_SIGNED_KEY);
    if !cert_path.exists() || !key_path.exists() {
        let generated = rcgen::generate_simple_self_signed(vec!["pilot-rendezvous".to_string()])
            .map_err(|e| format!("cannot create a self-signed certificate: {e}"))?;
        crate::fsutil::atomic_write(
            &key_path,
            generated.signing_key.serialize_pem().as_bytes(),
            0o600,
        )
        .map_err(|e| e.to_string())?;
        crate::fsutil::atomic_write(&cert_path, generated.cert.pem().as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
        tracing::info!(cert = %cert_path.display(), "self-signed carrier certificate created");
    }
    let chain = read_chain(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("cannot read the TLS key {}: {e}", key_path.display()))?;
    server_tls(chain, key, format!("self-signed ({})", cert_path.display()))
}

/// How an agent trusts the carrier's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// The system's roots (plus the name in the URL).
    #[default]
    System,
    /// Certificates signed by the CAs in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 (canonical hex).
    Pin(String),
}

/// The client configuration for `trust`.
pub fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match trust {
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: pin.clone(),
                provider: provider(),
            }))
            .with_no_client_auth(),
        Trust::System | Trust::CaFile(_) => {
            let mut roots = rustls::RootCertStore::empty();
            if let Trust::CaFile(path) = trust {
                for c in read_chain(path)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
                }
            } else {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                if roots.is_empty() {
                    return Err(
                        "no system root certificates found: pass --tls-ca FILE or --tls-pin SHA256"
                            .into(),
                    );
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// Accepts exactly one certificate, by its SHA-256. Signatures are still
/// checked, so the server must hold the certificate's key.
#[derive(Debug)]
struct Pinned {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint {} is not the pinned one",
                fingerprint(end_entity)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_is_kept_and_pins_parse() {
        let dir = tempfile::tempdir().unwrap();
        let a = CertSource::SelfSigned(dir.path().into()).load().unwrap();
        let b = CertSource::SelfSigned(dir.path().into()).load().unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let with_colons: Vec<String> = a
            .fingerprint
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8(c.to_vec()).unwrap().to_uppercase())
            .collect();
        assert_eq!(parse_pin(&with_colons.join(":")).unwrap(), a.fingerprint);
        assert!(parse_pin("abc").is_err());
        assert!(client_config(&Trust::Pin(a.fingerprint.clone())).is_ok());
    }
}
