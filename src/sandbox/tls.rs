//! Certificates and TLS configuration for the sandbox: a throw-away CA generated at start, one
//! server certificate for `localhost` and `127.0.0.1` signed by it, and the rustls server config.
//! Holds no sockets: the server shell does the handshakes.
//!
//! A CA plus a leaf (rather than one self-signed leaf) mirrors how clients are configured against
//! real relays: they trust a root given as a PEM file and check the server name against the SANs.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls::{
    self, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};

/// What generating the certificates or the TLS configuration can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("could not generate the sandbox certificate authority")]
    Certificate(#[from] rcgen::Error),
    #[error("could not build the sandbox TLS configuration")]
    Config(#[from] rustls::Error),
}

/// The generated CA (PEM, for clients to trust) and the server's TLS configuration.
pub struct Identity {
    /// The CA certificate, PEM; clients trust it.
    pub ca_pem: String,
    /// Serves the leaf certificate (SANs `localhost`, `127.0.0.1`) with the ring provider.
    pub server_config: Arc<ServerConfig>,
}

/// Generates a fresh CA and a server certificate with SANs `localhost` and `127.0.0.1`.
pub fn generate() -> Result<Identity, Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mailroom sandbox CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Identity {
        ca_pem,
        server_config: Arc::new(server_config),
    })
}
