//! Client TLS for every outgoing connection mailroom makes (relays, probes): the verifying
//! configuration (the system's CA bundle plus an optional CA file, TLS 1.2 or newer, ring), the
//! server name to verify, and plain words for rustls's certificate errors.
//!
//! It must never build a configuration that accepts an unverified certificate: the doctor's
//! inspection-only configuration lives in `doctor::tls`, next to the code that guarantees such a
//! session carries neither AUTH nor mail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Where Linux distributions keep the system's trusted roots, in order of preference.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

/// TLS versions mailroom speaks: 1.2 and 1.3 (RFC 8996 retired the older ones).
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "cannot read the CA file {path}: {cause}\n\nGive a PEM file holding the CA certificate(s) that issued the server's certificate."
    )]
    CaRead {
        path: PathBuf,
        // Shown in the message, before the fix, so not a `#[source]` (it would print twice).
        cause: rustls::pki_types::pem::Error,
    },
    #[error(
        "the CA file {path} holds no usable certificate\n\nGive a PEM file with at least one \"BEGIN CERTIFICATE\" block."
    )]
    CaEmpty { path: PathBuf },
    #[error("cannot build the TLS configuration")]
    Config(#[from] rustls::Error),
}

/// The verifying client configuration and where its roots came from.
pub struct Roots {
    pub config: Arc<ClientConfig>,
    /// Which bundle supplied the system roots (None: none found; only the CA file is trusted).
    pub system_bundle: Option<PathBuf>,
    /// How many roots are trusted in all.
    pub count: usize,
}

/// The crypto provider of every TLS configuration mailroom builds (one provider in the tree).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's roots (`SSL_CERT_FILE` first, then the usual bundle paths) plus `ca_file`.
///
/// # Errors
/// When `ca_file` cannot be read or holds no certificate.
pub fn root_store(ca_file: Option<&Path>) -> Result<(RootCertStore, Option<PathBuf>), Error> {
    let mut roots = RootCertStore::empty();
    let bundle = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    let mut system_bundle = None;
    if let Some(path) = bundle
        && let Ok(certs) = CertificateDer::pem_file_iter(&path)
    {
        let (added, _ignored) = roots.add_parsable_certificates(certs.flatten());
        if added > 0 {
            system_bundle = Some(path);
        }
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect())
            .map_err(|cause| Error::CaRead {
                path: path.to_owned(),
                cause,
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::CaEmpty {
                path: path.to_owned(),
            });
        }
    }
    Ok((roots, system_bundle))
}

/// The verifying configuration: certificates checked against [`root_store`], TLS 1.2+.
///
/// # Errors
/// As [`root_store`].
pub fn client_config(ca_file: Option<&Path>) -> Result<Roots, Error> {
    let (roots, system_bundle) = root_store(ca_file)?;
    let count = roots.len();
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Roots {
        config: Arc::new(config),
        system_bundle,
        count,
    })
}

/// The name a server's certificate must be valid for: a DNS name, or an IP address (a bracketed
/// IPv6 literal is accepted too).
///
/// # Errors
/// When `host` is neither.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|e| format!("{host:?}: {e}"))
}

/// rustls's words for a failed handshake, followed by what they mean and, where the user can act,
/// what to do.
pub fn explain(raw: &str) -> String {
    let meaning = if raw.contains("CaUsedAsEndEntity") {
        "the server presents a CA certificate as its own; if you gave that certificate as the CA \
         file, it is the server's certificate, not a CA: give the CA that issued it"
    } else if raw.contains("UnknownIssuer") {
        "issued by a CA that is not trusted here (self-signed or a private CA? give its CA as \
         ca_file)"
    } else if raw.contains("NotValidForName") {
        "the certificate is not valid for this host name"
    } else if raw.contains("Expired") {
        "the certificate has expired"
    } else if raw.contains("NotValidYet") {
        "the certificate is not valid yet (check the clock)"
    } else if raw.contains("Revoked") {
        "the certificate was revoked"
    } else if raw.contains("BadSignature") || raw.contains("UnsupportedSignatureAlgorithm") {
        "the certificate's signature cannot be checked"
    } else if raw.contains("InvalidContentType") || raw.contains("corrupt message") {
        "the server did not answer with TLS (a plaintext port?)"
    } else if raw.contains("ProtocolVersion") || raw.contains("HandshakeFailure") {
        "no common TLS version or cipher (mailroom requires TLS 1.2 or newer)"
    } else {
        return raw.to_owned();
    };
    format!("{raw} ({meaning})")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tls_errors_are_explained_and_keep_rustls_words() {
        let e = explain("invalid peer certificate: UnknownIssuer");
        assert!(
            e.starts_with("invalid peer certificate: UnknownIssuer ("),
            "{e}"
        );
        assert!(e.contains("not trusted"), "{e}");
        assert!(explain("invalid peer certificate: NotValidForName").contains("host name"));
        let leaf = explain("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))");
        assert!(leaf.contains("give the CA that issued it"), "{leaf}");
        assert_eq!(explain("something new"), "something new");
    }

    #[test]
    fn server_names_accept_hosts_and_addresses() {
        assert!(server_name("smtp.example.com").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(matches!(
            client_config(Some(&missing)),
            Err(Error::CaRead { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(
            client_config(Some(&empty)),
            Err(Error::CaEmpty { .. })
        ));
    }
}
