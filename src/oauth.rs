//! OAuth2 access tokens for XOAUTH2 (SMTP submission and IMAP): where a token comes from and
//! when it is fetched again. This module owns the token command (an argv run without a shell),
//! the refresh-token grant (RFC 6749 §6) over a bounded HTTPS POST ([`http`]), the token cache
//! shared by every connection of a run, and the XOAUTH2 client response.
//!
//! A token is fetched when a connection needs one and none is cached, or when the cached one
//! has less than [`margin`] of its life left, so a run of several hours never presents an
//! expired token. Tokens with no stated lifetime (a bare token printed by a command) are kept
//! for [`BARE_TOKEN_LIFETIME`].
//!
//! It must never put a token, a refresh token, a client secret or a token command's output in
//! a log line, an error message or the ledger: errors name the command or the endpoint and
//! quote only what a token endpoint says about the refusal (its `error` code and description,
//! made safe to show). Why not the `oauth2` crate: without its HTTP clients it adds no
//! transport, and with `default-features = false` it still brings second versions of base64,
//! rand and thiserror into a tree that already has newer ones, for one form POST and one JSON
//! object.

pub mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;
use tokio_rustls::rustls::ClientConfig;

use crate::transport::Secret;

/// How long a bare token (no `expires_in`) is reused before the command runs again.
pub const BARE_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Longest a token command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a token endpoint may take to answer.
pub const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes read from a token command's standard output.
pub const MAX_COMMAND_OUTPUT: usize = 64 * 1024;

/// A token is replaced when less than this is left of its life: five minutes, or half its
/// lifetime when that is shorter.
pub fn margin(lifetime: Duration) -> Duration {
    (lifetime / 2).min(Duration::from_secs(5 * 60))
}

/// Who issued the refresh token: decides the token endpoint and the scope asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Google,
    /// `tenant` is a directory id, a domain, or `common` / `organizations` / `consumers`.
    Microsoft {
        tenant: String,
    },
}

/// What the token is for (Microsoft scopes differ between SMTP and IMAP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Smtp,
    Imap,
}

impl Provider {
    pub fn token_url(&self) -> String {
        match self {
            Provider::Google => "https://oauth2.googleapis.com/token".to_owned(),
            Provider::Microsoft { tenant } => {
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
            }
        }
    }

    /// The scope sent with the refresh grant. Google keeps the scope the user consented to
    /// when none is sent; Microsoft's v2.0 endpoint wants it named.
    pub fn scope(&self, purpose: Purpose) -> Option<&'static str> {
        match (self, purpose) {
            (Provider::Google, _) => None,
            (Provider::Microsoft { .. }, Purpose::Smtp) => {
                Some("https://outlook.office.com/SMTP.Send offline_access")
            }
            (Provider::Microsoft { .. }, Purpose::Imap) => {
                Some("https://outlook.office.com/IMAP.AccessAsUser.All offline_access")
            }
        }
    }
}

/// The refresh-token grant's parameters, secrets already read from the environment or files.
#[derive(Debug, Clone)]
pub struct Grant {
    pub endpoint: http::Endpoint,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub refresh_token: Secret,
    pub scope: Option<String>,
}

/// Where tokens come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Program and arguments, run without a shell; it prints a token, or a JSON object with
    /// `access_token` and optionally `expires_in` (seconds).
    Command(Vec<String>),
    Refresh(Grant),
}

impl Source {
    /// Where tokens come from, in words that hold no secret.
    pub fn describe(&self) -> String {
        match self {
            Source::Command(argv) => format!(
                "the token command {}",
                crate::display::one_line(argv.first().map_or("", String::as_str))
            ),
            Source::Refresh(grant) => format!(
                "the token endpoint {}",
                crate::display::one_line(&grant.endpoint.host)
            ),
        }
    }
}

/// Why no token could be had. No variant holds a secret or a command's output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot run the token command {program}: {cause}")]
    Spawn { program: String, cause: String },
    #[error(
        "the token command {program} failed ({status}); its output is not shown because it may hold \
         a secret: run it yourself to see why"
    )]
    CommandFailed { program: String, status: String },
    #[error("the token command {program} did not finish within {} s", COMMAND_TIMEOUT.as_secs())]
    CommandTimeout { program: String },
    #[error("the token command {program} printed {what}")]
    CommandOutput { program: String, what: String },
    #[error("cannot reach the token endpoint {host}: {reason}")]
    Endpoint { host: String, reason: String },
    #[error("the token endpoint {host} refused the refresh token: {error}{description}")]
    Refused {
        host: String,
        error: String,
        /// ": description" or empty.
        description: String,
    },
    #[error("the token endpoint {host} answered {what}")]
    BadResponse { host: String, what: String },
}

#[derive(Debug)]
struct Cached {
    token: Secret,
    /// When to fetch a new one (its expiry less the margin).
    renew_at: Instant,
}

#[derive(Debug)]
struct State {
    cached: Option<Cached>,
    /// A rotated refresh token the endpoint sent back (Microsoft does), used from then on.
    refresh_token: Option<Secret>,
}

/// The token source shared by every connection of a run (one fetch at a time).
pub struct Tokens {
    source: Source,
    purpose: Purpose,
    tls: Arc<ClientConfig>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("source", &self.source.describe())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// `tls` verifies the token endpoint (the same roots as the relay).
    pub fn new(source: Source, tls: Arc<ClientConfig>) -> Tokens {
        Tokens {
            source,
            purpose: Purpose::Smtp,
            tls,
            state: Mutex::new(State {
                cached: None,
                refresh_token: None,
            }),
        }
    }

    /// Marks these tokens as IMAP's: a token command sees `MAILROOM_OAUTH_PURPOSE=imap`.
    pub fn for_purpose(mut self, purpose: Purpose) -> Tokens {
        self.purpose = purpose;
        self
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// A token with at least the margin of its life left, fetched if needed.
    ///
    /// # Errors
    /// When the command or the endpoint gives no token; see [`Error`].
    pub async fn token(&self) -> Result<Secret, Error> {
        let mut state = self.state.lock().await;
        if let Some(cached) = &state.cached
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        let fetched = match &self.source {
            Source::Command(argv) => run_command(argv, self.purpose).await?,
            Source::Refresh(grant) => {
                let refresh = state.refresh_token.as_ref().unwrap_or(&grant.refresh_token);
                let fetched = refresh_grant(grant, refresh, &self.tls).await?;
                if let Some(rotated) = &fetched.refresh_token {
                    state.refresh_token = Some(rotated.clone());
                }
                fetched
            }
        };
        let lifetime = fetched.lifetime.unwrap_or(BARE_TOKEN_LIFETIME);
        let token = fetched.token.clone();
        state.cached = Some(Cached {
            token: fetched.token,
            renew_at: Instant::now() + lifetime - margin(lifetime),
        });
        Ok(token)
    }
}

/// A token as fetched.
struct Fetched {
    token: Secret,
    lifetime: Option<Duration>,
    refresh_token: Option<Secret>,
}

async fn run_command(argv: &[String], purpose: Purpose) -> Result<Fetched, Error> {
    let program = crate::display::one_line(argv.first().map_or("", String::as_str));
    let Some((first, rest)) = argv.split_first() else {
        return Err(Error::Spawn {
            program,
            cause: "the command is empty".into(),
        });
    };
    let mut child = tokio::process::Command::new(first)
        .args(rest)
        // One command can serve both: the account or scope may differ for the bounce mailbox.
        .env(
            "MAILROOM_OAUTH_PURPOSE",
            match purpose {
                Purpose::Smtp => "smtp",
                Purpose::Imap => "imap",
            },
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Its diagnostics may quote secrets and would tear a dashboard: never shown.
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Spawn {
            program: program.clone(),
            cause: e.to_string(),
        })?;
    let Some(stdout) = child.stdout.take() else {
        return Err(Error::Spawn {
            program,
            cause: "no standard output".into(),
        });
    };
    let run = async {
        let mut out = Vec::new();
        let read = stdout
            .take(MAX_COMMAND_OUTPUT as u64 + 1)
            .read_to_end(&mut out)
            .await;
        (read, out, child.wait().await)
    };
    let Ok((read, out, status)) = tokio::time::timeout(COMMAND_TIMEOUT, run).await else {
        return Err(Error::CommandTimeout { program });
    };
    let output = |what: &str| Error::CommandOutput {
        program: program.clone(),
        what: what.to_owned(),
    };
    let status = status.map_err(|e| Error::Spawn {
        program: program.clone(),
        cause: e.to_string(),
    })?;
    if !status.success() {
        return Err(Error::CommandFailed {
            program,
            status: status.to_string(),
        });
    }
    read.map_err(|e| output(&format!("unreadable output ({e})")))?;
    if out.len() > MAX_COMMAND_OUTPUT {
        return Err(output("more than 64 KiB"));
    }
    let text = std::str::from_utf8(&out).map_err(|_| output("output that is not UTF-8"))?;
    parse_token_output(text.trim()).map_err(|what| output(&what))
}

/// A command's output: a bare token, or `{"access_token": …, "expires_in": …}`.
fn parse_token_output(text: &str) -> Result<Fetched, String> {
    if text.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| "a JSON object that does not parse")?;
        let (token, lifetime) = token_fields(&value)?;
        return Ok(Fetched {
            token,
            lifetime,
            refresh_token: None,
        });
    }
    if text.is_empty() {
        return Err("nothing".into());
    }
    check_token(text)?;
    Ok(Fetched {
        token: Secret::new(text.to_owned()),
        lifetime: None,
        refresh_token: None,
    })
}

/// A token must be one line of visible ASCII (RFC 6750's b64token and what real issuers use);
/// anything else would break the XOAUTH2 string or the SMTP line.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("an empty access_token".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "more than one line, or a token with spaces or non-ASCII characters \
             (print only the token, or a JSON object with access_token)"
                .into(),
        );
    }
    if token.len() > 8192 {
        return Err("a token longer than 8,192 characters".into());
    }
    Ok(())
}

/// `access_token` and `expires_in` (a number, or a string of digits as some issuers send).
fn token_fields(value: &serde_json::Value) -> Result<(Secret, Option<Duration>), String> {
    let token = value
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .ok_or("a JSON object without a string access_token")?;
    check_token(token)?;
    let lifetime = match value.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            let secs = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or("an expires_in that is not a whole number of seconds")?;
            // A day caps a token's reuse whatever the issuer says; zero means "fetch each time".
            Some(Duration::from_secs(secs.min(86_400)))
        }
    };
    Ok((Secret::new(token.to_owned()), lifetime))
}

async fn refresh_grant(
    grant: &Grant,
    refresh_token: &Secret,
    tls: &Arc<ClientConfig>,
) -> Result<Fetched, Error> {
    let host = grant.endpoint.host.clone();
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose()),
        ("client_id", grant.client_id.as_str()),
    ];
    if let Some(secret) = &grant.client_secret {
        form.push(("client_secret", secret.expose()));
    }
    if let Some(scope) = &grant.scope {
        form.push(("scope", scope.as_str()));
    }
    // The form carries the refresh token and the client secret. (The reply's tokens also pass
    // through serde_json's values, which are freed as they are.)
    let body = zeroize::Zeroizing::new(http::form_encode(&form));
    let (status, body) = http::post_form(&grant.endpoint, &body, tls, ENDPOINT_TIMEOUT)
        .await
        .map_err(|reason| Error::Endpoint {
            host: host.clone(),
            reason,
        })?;
    let body = zeroize::Zeroizing::new(body);
    let bad = |what: String| Error::BadResponse {
        host: host.clone(),
        what,
    };
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| bad(format!("HTTP {status} with a body that is not JSON")))?;
    if let Some(error) = value.get("error").and_then(serde_json::Value::as_str) {
        let description = value
            .get("error_description")
            .and_then(serde_json::Value::as_str)
            .map(|d| format!(": {}", crate::display::one_line(&truncate(d, 300))))
            .unwrap_or_default();
        return Err(Error::Refused {
            host,
            error: crate::display::one_line(&truncate(error, 100)),
            description,
        });
    }
    if status != 200 {
        return Err(bad(format!("HTTP {status} without an OAuth error")));
    }
    let (token, lifetime) =
        token_fields(&value).map_err(|what| bad(format!("HTTP 200 with {what}")))?;
    let refresh_token = value
        .get("refresh_token")
        .and_then(serde_json::Value::as_str)
        .filter(|t| check_token(t).is_ok())
        .map(|t| Secret::new(t.to_owned()));
    Ok(Fetched {
        token,
        lifetime,
        refresh_token,
    })
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The XOAUTH2 initial client response: base64 of `user=U^Aauth=Bearer T^A^A`.
pub fn xoauth2_response(user: &str, token: &Secret) -> zeroize::Zeroizing<String> {
    let raw = Secret::concat(&[
        "user=",
        user,
        "\x01auth=Bearer ",
        token.expose(),
        "\x01\x01",
    ]);
    zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()))
}

/// The server's XOAUTH2 error challenge (base64 JSON such as
/// `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`) in words.
pub fn describe_challenge(challenge: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(challenge.trim())
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(|s| crate::display::one_line(&truncate(s, 200)))
    };
    let mut parts = Vec::new();
    if let Some(status) = field("status") {
        parts.push(format!("status {status}"));
    }
    if let Some(scope) = field("scope") {
        parts.push(format!("scope {scope}"));
    }
    (!parts.is_empty()).then(|| format!("the server refused the token ({})", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_output_is_a_bare_token_or_json() {
        let bare = parse_token_output("ya29.a0AfB_byC-x").expect("bare");
        assert_eq!(bare.token.expose(), "ya29.a0AfB_byC-x");
        assert_eq!(bare.lifetime, None);
        let json = parse_token_output(r#"{"access_token":"t1","expires_in":3599}"#).expect("json");
        assert_eq!(
            (json.token.expose(), json.lifetime),
            ("t1", Some(Duration::from_secs(3599)))
        );
        let text = parse_token_output(r#"{"access_token":"t1","expires_in":"60"}"#).expect("str");
        assert_eq!(text.lifetime, Some(Duration::from_secs(60)));
        for bad in [
            "",
            "two\nlines",
            "has space",
            "{\"token\":\"x\"}",
            "{\"access_token\":\"x\",\"expires_in\":-1}",
            "{broken",
        ] {
            assert!(parse_token_output(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_about_output_never_quote_it() {
        let e = parse_token_output("secret-part another-secret").err();
        assert!(e.is_some_and(|m| !m.contains("secret")));
    }

    #[test]
    fn margin_is_five_minutes_or_half_a_short_life() {
        assert_eq!(margin(Duration::from_secs(3600)), Duration::from_secs(300));
        assert_eq!(margin(Duration::from_secs(120)), Duration::from_secs(60));
        assert_eq!(margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn xoauth2_response_has_the_documented_shape() {
        let b64 = xoauth2_response("a@example.com", &Secret::new("tok".into()));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        assert_eq!(raw, b"user=a@example.com\x01auth=Bearer tok\x01\x01");
    }

    #[test]
    fn challenges_decode_to_words() {
        let challenge = base64::engine::general_purpose::STANDARD
            .encode(r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#);
        assert_eq!(
            describe_challenge(&challenge).as_deref(),
            Some("the server refused the token (status 400, scope https://mail.google.com/)")
        );
        assert_eq!(describe_challenge("not base64!"), None);
    }

    #[test]
    fn providers_name_their_endpoints_and_scopes() {
        let ms = Provider::Microsoft {
            tenant: "contoso.onmicrosoft.com".into(),
        };
        assert_eq!(
            ms.token_url(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert!(ms.scope(Purpose::Imap).is_some_and(|s| s.contains("IMAP")));
        assert_eq!(Provider::Google.scope(Purpose::Smtp), None);
    }
}
