//! TLS client configurations for the doctor: one that verifies (system roots + `--ca-file`, TLS
//! 1.2+) and one that accepts any certificate.
//!
//! The accepting one exists ONLY to read a certificate that failed verification so the report can
//! show what the server presents. A session made with it must never carry AUTH or mail: the probe
//! enforces that by tracking `verified` on every TLS session it opens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Where Linux distributions keep the system's trusted roots, in order of preference.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read the CA file {path}: {source}\n\nPass a PEM file holding the CA certificate(s) with --ca-file."
    )]
    CaRead {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "the CA file {path} holds no usable certificate\n\nPass a PEM file with at least one \"BEGIN CERTIFICATE\" block."
    )]
    CaEmpty { path: PathBuf },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Both client configurations, built once per doctor run.
pub struct Configs {
    pub verified: Arc<ClientConfig>,
    pub inspect: Arc<ClientConfig>,
    /// Which bundle supplied the system roots (None: none found; only --ca-file is trusted).
    pub system_roots: Option<PathBuf>,
    pub roots: usize,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn configs(ca_file: Option<&Path>) -> Result<Configs, Error> {
    let mut roots = RootCertStore::empty();
    let bundle = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    let mut system_roots = None;
    if let Some(path) = bundle
        && let Ok(certs) = CertificateDer::pem_file_iter(&path)
    {
        let (added, _ignored) = roots.add_parsable_certificates(certs.flatten());
        if added > 0 {
            system_roots = Some(path);
        }
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect())
            .map_err(|source| Error::CaRead {
                path: path.to_owned(),
                source,
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::CaEmpty {
                path: path.to_owned(),
            });
        }
    }
    let count = roots.len();
    let versions: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    let verified = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let algorithms = provider().signature_verification_algorithms;
    let inspect = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyForInspection { algorithms }))
        .with_no_client_auth();
    Ok(Configs {
        verified: Arc::new(verified),
        inspect: Arc::new(inspect),
        system_roots,
        roots: count,
    })
}

/// Accepts every certificate (but still checks the handshake signatures, so the session is at
/// least with the holder of the presented key). For reading a rejected certificate only.
#[derive(Debug)]
struct AcceptAnyForInspection {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyForInspection {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
