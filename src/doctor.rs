//! `mailroom doctor`: probes a relay's ports (587, 465, 2525, 25 by default) concurrently and
//! tells which port and security to put in campaign.toml, and why.
//!
//! For each port: TCP connect, greeting and EHLO, TLS (STARTTLS, or implicit on 465, detecting a
//! port that does the other), the certificate, and optionally AUTH. It owns the probe, the report
//! types (`--json` is their serde form), the verdict and the text rendering.
//!
//! It must never send mail (no MAIL/RCPT/DATA), never AUTH over plaintext or over a TLS session
//! whose certificate did not verify, and never print or store the password.

pub mod cert;
pub mod dns;
pub mod inspect;
mod probe;
pub mod tls;
pub mod verdict;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use verdict::{Recommendation, recommend};

/// The default ports, most useful first.
pub const DEFAULT_PORTS: &[u16] = &[587, 465, 2525, 25];

/// Ports where the probe tries implicit TLS first by default (RFC 8314 submission); others
/// try STARTTLS first. Either way a port doing the other is detected and reported.
pub const DEFAULT_IMPLICIT_PORTS: &[u16] = &[465];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("no port to probe\n\nPass ports with --ports, e.g. --ports 587,465.")]
    NoPorts,
}

/// Credentials for the optional AUTH test. Debug never shows the password or a token.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub login: Login,
}

/// How the AUTH test logs in.
#[derive(Clone)]
pub enum Login {
    /// PLAIN, else LOGIN.
    Password(crate::transport::Secret),
    /// XOAUTH2 with a token from this source (fetched when the test runs).
    XOAuth2(std::sync::Arc<crate::oauth::Tokens>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let login = match &self.login {
            Login::Password(_) => "password <redacted>".to_owned(),
            Login::XOAuth2(tokens) => format!("xoauth2 from {}", tokens.source().describe()),
        };
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("login", &login)
            .finish()
    }
}

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub host: String,
    pub ports: Vec<u16>,
    pub ca_file: Option<PathBuf>,
    /// Limit for each step (connect, each reply, the TLS handshake).
    pub timeout: Duration,
    /// EHLO name; default: the address literal of our end of the connection.
    pub hello_name: Option<String>,
    /// Some = try AUTH (over verified TLS only).
    pub credentials: Option<Credentials>,
    /// The port the campaign already uses: kept in the verdict when it works.
    pub configured_port: Option<u16>,
    /// The security the campaign configures for that port (to point out a mismatch).
    pub configured_security: Option<Security>,
    /// Ports to try implicit TLS on first (normally `DEFAULT_IMPLICIT_PORTS`).
    pub implicit_ports: Vec<u16>,
}

/// The whole result; `--json` prints exactly this.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub host: String,
    /// Where the trusted roots came from ("/etc/ssl/certs/…" and/or the --ca-file).
    pub trust: Vec<String>,
    pub ports: Vec<PortReport>,
    pub recommendation: Recommendation,
}

/// How a TCP connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Connect {
    Open,
    Refused,
    /// No answer in time: usually a firewall dropping packets (filtered/blocked).
    Timeout,
    Error,
}

/// The security a port actually speaks (its `security` value in campaign.toml).
pub use crate::model::Security;

/// One port's findings.
#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    pub port: u16,
    pub connect: Connect,
    pub reachable: bool,
    /// What ended the probe early, if anything ("connection refused", "TLS handshake failed: …").
    pub error: Option<String>,
    /// What the probe tried first (implicit TLS on 465, STARTTLS elsewhere).
    pub expected: Security,
    /// What the port turned out to speak.
    pub security: Option<Security>,
    /// The greeting line(s), e.g. "220 mx.example.com ESMTP".
    pub banner: Option<String>,
    /// Extensions of the last EHLO (after TLS when TLS worked).
    pub extensions: Vec<String>,
    /// Extensions of the plaintext EHLO before STARTTLS (empty for implicit TLS).
    pub extensions_before_tls: Vec<String>,
    pub starttls_offered: bool,
    /// SIZE limit in bytes (None: no SIZE, or SIZE without limit).
    pub size_limit: Option<u64>,
    pub pipelining: bool,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub enhancedstatuscodes: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub tls: Option<TlsReport>,
    /// AUTH mechanisms offered on the session that counts (after TLS when TLS worked).
    pub auth_mechanisms: Vec<String>,
    /// AUTH was offered before TLS: a client could send its password in cleartext.
    pub auth_before_tls: bool,
    pub auth_result: Option<AuthResult>,
    pub warnings: Vec<String>,
    pub elapsed_ms: u64,
}

impl PortReport {
    pub fn new(port: u16, expected: Security) -> PortReport {
        PortReport {
            port,
            connect: Connect::Error,
            reachable: false,
            error: None,
            expected,
            security: None,
            banner: None,
            extensions: Vec::new(),
            extensions_before_tls: Vec::new(),
            starttls_offered: false,
            size_limit: None,
            pipelining: false,
            eightbitmime: false,
            smtputf8: false,
            enhancedstatuscodes: false,
            dsn: false,
            chunking: false,
            tls: None,
            auth_mechanisms: Vec::new(),
            auth_before_tls: false,
            auth_result: None,
            warnings: Vec::new(),
            elapsed_ms: 0,
        }
    }

    /// TLS with a certificate that verified (chain and name).
    pub fn tls_verified(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.verified)
    }

    pub fn auth_succeeded(&self) -> bool {
        self.auth_result.as_ref().is_some_and(|a| a.success)
    }
}

/// The negotiated TLS session and the server's certificate.
#[derive(Debug, Clone, Serialize)]
pub struct TlsReport {
    /// "TLSv1.3", "TLSv1.2".
    pub version: String,
    /// e.g. "TLS13_AES_256_GCM_SHA384".
    pub cipher: String,
    /// Chain verified against the trusted roots AND the name matched.
    pub verified: bool,
    /// Why verification failed (rustls's words), when it did.
    pub verify_error: Option<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    /// The host we connected to is among the certificate's names.
    pub name_matches: bool,
    /// Certificates the server sent (leaf first).
    pub chain_length: usize,
}

/// The AUTH test.
#[derive(Debug, Clone, Serialize)]
pub struct AuthResult {
    pub attempted: bool,
    pub success: bool,
    pub mechanism: Option<String>,
    /// The server's final reply, verbatim ("235 2.7.0 Authentication successful").
    pub reply: Option<String>,
    /// Why it was not attempted.
    pub skipped: Option<String>,
}

/// Probes every port concurrently and derives the recommendation.
pub async fn run(options: &Options) -> Result<Report, Error> {
    if options.ports.is_empty() {
        return Err(Error::NoPorts);
    }
    let configs = tls::configs(options.ca_file.as_deref())?;
    let mut trust = Vec::new();
    if let Some(path) = &configs.system_roots {
        trust.push(path.display().to_string());
    }
    if let Some(path) = &options.ca_file {
        trust.push(path.display().to_string());
    }
    // The campaign must trust the same extra CA the probe trusted: absolute, so it works anywhere.
    let ca_file = options.ca_file.as_ref().map(|p| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string()
    });
    let probes = options
        .ports
        .iter()
        .map(|&port| probe::probe_port(options, &configs, port));
    let ports = futures_util::future::join_all(probes).await;
    let mut recommendation = recommend(
        &options.host,
        &ports,
        options.configured_port,
        options.credentials.is_some(),
        ca_file.as_deref(),
    );
    if let (Some(port), Some(security)) = (options.configured_port, options.configured_security)
        && let Some(note) = verdict::config_mismatch(&ports, port, security)
    {
        recommendation.reasons.insert(0, note);
    }
    Ok(Report {
        host: options.host.clone(),
        trust,
        ports,
        recommendation,
    })
}

impl Report {
    /// Exit 0 when at least one port is usable securely.
    pub fn usable(&self) -> bool {
        self.recommendation.usable
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "mailroom doctor: {}", self.host);
        if self.trust.is_empty() {
            let _ = writeln!(out, "  trusted roots: none found (pass --ca-file)");
        } else {
            let _ = writeln!(out, "  trusted roots: {}", self.trust.join(" + "));
        }
        for p in &self.ports {
            let _ = writeln!(out);
            let _ = writeln!(out, "port {}: {}", p.port, port_headline(p));
            if let Some(banner) = &p.banner {
                let _ = writeln!(out, "  banner: {banner}");
            }
            if !p.extensions_before_tls.is_empty() && p.tls.is_some() {
                let _ = writeln!(out, "  before TLS: {}", p.extensions_before_tls.join(", "));
            }
            if !p.extensions.is_empty() {
                let label = if p.tls.is_some() {
                    "after TLS"
                } else {
                    "extensions"
                };
                let _ = writeln!(out, "  {label}: {}", p.extensions.join(", "));
            }
            if let Some(size) = p.size_limit {
                let _ = writeln!(out, "  size limit: {} ({} bytes)", human_size(size), size);
            }
            if let Some(t) = &p.tls {
                let _ = writeln!(out, "  tls: {} {}", t.version, t.cipher);
                if let Some(subject) = &t.subject {
                    let _ = writeln!(out, "  certificate: {subject}");
                }
                if let Some(issuer) = &t.issuer {
                    let _ = writeln!(out, "  issued by: {issuer}");
                }
                if !t.dns_names.is_empty() || !t.ip_addresses.is_empty() {
                    let names: Vec<&str> = t
                        .dns_names
                        .iter()
                        .chain(&t.ip_addresses)
                        .map(String::as_str)
                        .collect();
                    let _ = writeln!(out, "  names: {}", names.join(", "));
                }
                if let (Some(not_after), Some(days)) = (&t.not_after, t.days_left) {
                    let _ = writeln!(out, "  expires: {not_after} ({days} days left)");
                }
                if t.verified {
                    let _ = writeln!(out, "  verified: yes (chain and name)");
                } else {
                    let _ = writeln!(
                        out,
                        "  verified: NO: {}{}",
                        t.verify_error.as_deref().unwrap_or("unknown reason"),
                        if t.name_matches {
                            ""
                        } else {
                            " (and the name does not match)"
                        }
                    );
                }
            }
            if !p.auth_mechanisms.is_empty() {
                let _ = writeln!(out, "  auth: {}", p.auth_mechanisms.join(" "));
            }
            if let Some(a) = &p.auth_result {
                let line = match (a.attempted, a.success) {
                    (true, true) => format!(
                        "accepted ({}): {}",
                        a.mechanism.as_deref().unwrap_or("?"),
                        a.reply.as_deref().unwrap_or("")
                    ),
                    (true, false) => format!(
                        "REJECTED ({}): {}",
                        a.mechanism.as_deref().unwrap_or("?"),
                        a.reply.as_deref().unwrap_or("")
                    ),
                    _ => format!("not tried: {}", a.skipped.as_deref().unwrap_or("")),
                };
                let _ = writeln!(out, "  auth test: {line}");
            }
            for w in &p.warnings {
                let _ = writeln!(out, "  warning: {w}");
            }
        }
        let _ = writeln!(out);
        let r = &self.recommendation;
        if r.usable {
            let _ = writeln!(out, "verdict: {}", r.summary);
            let _ = writeln!(out, "put this in campaign.toml [smtp]:");
            for line in &r.toml {
                let _ = writeln!(out, "  {line}");
            }
        } else {
            let _ = writeln!(out, "verdict: no port is usable securely. {}", r.summary);
        }
        for why in &r.reasons {
            let _ = writeln!(out, "  - {why}");
        }
        out
    }
}

/// "open, implicit TLS", "refused", "timed out (filtered/blocked?)", …
fn port_headline(p: &PortReport) -> String {
    let mut head = match p.connect {
        Connect::Open => "open".to_owned(),
        Connect::Refused => "refused (nothing listening, or a firewall rejecting)".to_owned(),
        Connect::Timeout => "timed out (filtered/blocked?)".to_owned(),
        Connect::Error => "unreachable".to_owned(),
    };
    match p.security {
        Some(Security::Tls) => head.push_str(", implicit TLS"),
        Some(Security::StartTls) => head.push_str(", STARTTLS"),
        Some(Security::None) => head.push_str(", plaintext only (no STARTTLS)"),
        None => {}
    }
    if let Some(e) = &p.error {
        let _ = write!(head, ": {e}");
    }
    head
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
