//! TLS client configurations for the doctor: the verifying one (`crate::tls`: system roots +
//! `--ca-file`, TLS 1.2+) and one that accepts any certificate.
//!
//! The accepting one exists ONLY to read a certificate that failed verification so the report can
//! show what the server presents. A session made with it must never carry AUTH or mail: the probe
//! enforces that by tracking `verified` on every TLS session it opens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::WebPkiSupportedAlgorithms;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};

pub use crate::tls::Error;

/// Both client configurations, built once per doctor run.
pub struct Configs {
    pub verified: Arc<ClientConfig>,
    pub inspect: Arc<ClientConfig>,
    /// Which bundle supplied the system roots (None: none found; only --ca-file is trusted).
    pub system_roots: Option<PathBuf>,
    pub roots: usize,
}

pub fn configs(ca_file: Option<&Path>) -> Result<Configs, Error> {
    let roots = crate::tls::client_config(ca_file)?;
    let algorithms = crate::tls::provider().signature_verification_algorithms;
    let inspect = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(crate::tls::VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyForInspection { algorithms }))
        .with_no_client_auth();
    Ok(Configs {
        verified: roots.config,
        inspect: Arc::new(inspect),
        system_roots: roots.system_bundle,
        roots: roots.count,
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
