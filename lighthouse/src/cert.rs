//! The Lighthouse's self-signed certificate, and the TLS configurations:
//! the server's, and the node's, which accepts exactly the certificate whose
//! SHA-256 the join token carries (pinning; no CA, no trust on first use).

use std::{path::Path, sync::Arc};

use flatnet_wire::fs::write_atomic;

use flatnet_wire::lighthouse::{ALPN, SERVER_NAME};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};

use sha2::{Digest, Sha256};

use crate::token::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("writing the Lighthouse's certificate and key in {0}: {1}")]
    Io(String, std::io::Error),
    #[error("generating the certificate: {0}")]
    Gen(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The certificate and key, loaded or created under `dir` (key mode 0600).
pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

/// The certificate and key files in a state dir.
pub fn identity_paths(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        dir.join("lighthouse.crt.der"),
        dir.join("lighthouse.key.der"),
    )
}

impl Identity {
    /// Write a certificate and key (from a backup) into `dir`: key first,
    /// as when they are created.
    pub fn install(dir: &Path, cert: &[u8], key: &[u8]) -> std::io::Result<()> {
        let (cp, kp) = identity_paths(dir);
        write_atomic(&kp, key, 0o600)?;
        write_atomic(&cp, cert, 0o600)
    }

    pub fn load_or_create(dir: &Path) -> Result<Self, CertError> {
        let (cp, kp) = identity_paths(dir);
        let io = |e| CertError::Io(dir.display().to_string(), e);
        if cp.exists() && kp.exists() {
            let cert = std::fs::read(&cp).map_err(io)?;
            let key = std::fs::read(&kp).map_err(io)?;
            return Ok(Self {
                cert: CertificateDer::from(cert),
                key: PrivatePkcs8KeyDer::from(key),
            });
        }
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])?;
        let cert = ck.cert.der().to_vec();
        let key = ck.key_pair.serialize_der();
        // Key first, certificate last: a crash leaves either both or a
        // lone key, which the next start replaces (never a certificate
        // whose key is missing or half written).
        write_atomic(&kp, &key, 0o600).map_err(io)?;
        write_atomic(&cp, &cert, 0o600).map_err(io)?;
        Ok(Self {
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(key),
        })
    }

    /// The key of QUIC stateless resets, derived from the private key so
    /// that it survives restarts: a node still holding a connection to the
    /// previous process gets a reset it can verify on its next packet and
    /// reconnects at once, instead of waiting out the idle timeout (15 s).
    pub fn reset_key(&self) -> ring::hmac::Key {
        let mut h = Sha256::new();
        h.update(b"flatnet lighthouse stateless reset v1\0");
        h.update(self.key.secret_pkcs8_der());
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &h.finalize())
    }

    /// The key that signs connection IDs, also derived from the private
    /// key: a restarted Lighthouse recognises its predecessor's connection
    /// IDs as its own, which is what lets it answer them with a reset.
    pub fn cid_key(&self) -> u64 {
        let mut h = Sha256::new();
        h.update(b"flatnet lighthouse connection ids v1\0");
        h.update(self.key.secret_pkcs8_der());
        let d = h.finalize();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    /// Hex SHA-256 of the certificate, as join tokens carry it.
    pub fn fingerprint(&self) -> String {
        sha256_hex(self.cert.as_ref())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 server configuration with the Lighthouse ALPN.
pub fn server_tls(id: &Identity) -> Result<rustls::ServerConfig, CertError> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![id.cert.clone()],
            PrivateKeyDer::Pkcs8(id.key.clone_key()),
        )?;
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

/// TLS 1.3 client configuration that accepts only the certificate with
/// SHA-256 `fingerprint`.
pub fn client_tls(fingerprint: &str) -> Result<rustls::ClientConfig, CertError> {
    let p = provider();
    let mut c = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint: fingerprint.to_ascii_lowercase(),
            provider: p,
        }))
        .with_no_client_auth();
    c.alpn_protocols = vec![ALPN.to_vec()];
    Ok(c)
}

#[derive(Debug)]
struct Pinned {
    fingerprint: String,
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
        if sha256_hex(end_entity.as_ref()) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the Lighthouse certificate does not match the join token's fingerprint".into(),
            ))
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
    fn reset_and_cid_keys_survive_a_restart_and_differ_between_lighthouses() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        let sign = |i: &Identity| ring::hmac::sign(&i.reset_key(), b"cid").as_ref().to_vec();
        assert_eq!(sign(&a), sign(&b));
        assert_eq!(a.cid_key(), b.cid_key());
        let other = tempfile::tempdir().unwrap();
        let c = Identity::load_or_create(other.path()).unwrap();
        assert_ne!(sign(&a), sign(&c));
        assert_ne!(a.cid_key(), c.cid_key());
    }

    #[test]
    fn identity_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("lighthouse.key.der"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        server_tls(&a).unwrap();
        client_tls(&a.fingerprint()).unwrap();
    }
}
