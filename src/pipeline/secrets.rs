//! The secrets `[smtp]` names, read when a run starts: the password from `password_env` or
//! `password_file`, and for `auth = "xoauth2"` the token source (a token command, or the
//! refresh-token grant with its client id, client secret and refresh token from the
//! environment or files). Errors name the key and the variable or file, never a value; nothing
//! here logs, and nothing here is stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::campaign::config::{AuthMethod, OAuthProvider, SmtpConfig};
use crate::oauth::{self, Grant, Provider, Purpose, Source, Tokens};
use crate::transport::Secret;

use super::setup::{Error, SMTP_TABLE};

/// A secret from the variable `var` (set and not empty).
fn from_env(config: &Path, key: &'static str, var: &str) -> Result<Secret, Error> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
        _ => Err(Error::SecretEnv {
            config: config.to_owned(),
            table: SMTP_TABLE.to_owned(),
            key,
            var: var.to_owned(),
        }),
    }
}

/// The most read from a secret file: far beyond any password or token, and a bound on what a
/// wrong path (`/dev/zero`, a log file) can make mailroom hold.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// A secret from the first line of `path` (trailing newline removed); an empty first line, or
/// a file far larger than any secret, is refused (the value is never shown).
fn from_file(path: &Path, what: &'static str) -> Result<Secret, Error> {
    let fail = |source| Error::SecretFile {
        what,
        path: path.to_owned(),
        source,
    };
    let refuse = |why| Error::SecretFileContent {
        what,
        path: path.to_owned(),
        why,
    };
    // Sized from the file's length once: a buffer that grew would free partial copies.
    let read = crate::bounded::read_file(path, MAX_SECRET_FILE).map_err(fail)?;
    let Some(bytes) = read else {
        return Err(refuse("is larger than 64 KiB, far more than a secret"));
    };
    // Whatever the file holds is overwritten once read, on every path.
    let text = match String::from_utf8(bytes) {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(e) => {
            zeroize::Zeroize::zeroize(&mut e.into_bytes());
            return Err(refuse("is not UTF-8 text"));
        }
    };
    let first = text.lines().next().unwrap_or_default();
    if first.trim().is_empty() {
        return Err(refuse("has nothing on its first line"));
    }
    Ok(Secret::new(first.to_owned()))
}

/// The secret `what` from the variable named by `{what}_env` or the file `{what}_file`.
fn either(
    config: &Path,
    what: (&'static str, &'static str),
    env: Option<&String>,
    file: Option<&PathBuf>,
) -> Result<Option<Secret>, Error> {
    let (key, words) = what;
    match (env, file) {
        (Some(var), _) => from_env(config, key, var).map(Some),
        (None, Some(path)) => from_file(path, words).map(Some),
        (None, None) => Ok(None),
    }
}

/// The password, when `[smtp]` uses one.
///
/// # Errors
/// When the variable is unset or the file unreadable, or a username has no password source.
pub fn password(smtp: &SmtpConfig, config: &Path) -> Result<Option<Secret>, Error> {
    if smtp.auth == AuthMethod::Xoauth2 {
        return Ok(None);
    }
    let password = either(
        config,
        ("password_env", "password"),
        smtp.password_env.as_ref(),
        smtp.password_file.as_ref(),
    )?;
    if smtp.username.is_some() && password.is_none() {
        return Err(Error::NoPassword {
            config: config.to_owned(),
            table: SMTP_TABLE.to_owned(),
        });
    }
    Ok(password)
}

/// The token source, when `[smtp] auth = "xoauth2"`; `purpose` picks Microsoft's scope and
/// what a token command is told.
///
/// # Errors
/// When a variable is unset, a file unreadable, or the TLS roots unusable.
pub fn tokens(
    smtp: &SmtpConfig,
    config: &Path,
    purpose: Purpose,
) -> Result<Option<Arc<Tokens>>, Error> {
    if smtp.auth != AuthMethod::Xoauth2 {
        return Ok(None);
    }
    let source = match &smtp.token_command {
        Some(argv) => Source::Command(argv.clone()),
        None => Source::Refresh(grant(smtp, config, purpose)?),
    };
    let roots = crate::tls::client_config(smtp.ca_file.as_deref())?;
    Ok(Some(Arc::new(
        Tokens::new(source, roots.config).for_purpose(purpose),
    )))
}

fn grant(smtp: &SmtpConfig, config: &Path, purpose: Purpose) -> Result<Grant, Error> {
    let provider = smtp.provider.map(|p| match p {
        OAuthProvider::Google => Provider::Google,
        OAuthProvider::Microsoft => Provider::Microsoft {
            tenant: smtp.tenant.clone().unwrap_or_else(|| "common".to_owned()),
        },
    });
    // Validation made sure there is a provider or a token URL, and that the URL parses.
    let url = match (&smtp.token_url, &provider) {
        (Some(url), _) => url.clone(),
        (None, Some(provider)) => provider.token_url(),
        (None, None) => String::new(),
    };
    let endpoint = oauth::http::Endpoint::parse(&url).map_err(|why| Error::TokenUrl {
        config: config.to_owned(),
        table: SMTP_TABLE.to_owned(),
        why,
    })?;
    let client_id = match &smtp.client_id_env {
        Some(var) => from_env(config, "client_id_env", var)?.expose().to_owned(),
        None => String::new(),
    };
    let client_secret = either(
        config,
        ("client_secret_env", "client secret"),
        smtp.client_secret_env.as_ref(),
        smtp.client_secret_file.as_ref(),
    )?;
    let refresh_token = either(
        config,
        ("refresh_token_env", "refresh token"),
        smtp.refresh_token_env.as_ref(),
        smtp.refresh_token_file.as_ref(),
    )?
    .ok_or_else(|| Error::SecretEnv {
        config: config.to_owned(),
        table: SMTP_TABLE.to_owned(),
        key: "refresh_token_env",
        var: String::new(),
    })?;
    let scope = smtp.scope.clone().or_else(|| {
        provider
            .as_ref()
            .and_then(|p| p.scope(purpose))
            .map(str::to_owned)
    });
    Ok(Grant {
        endpoint,
        client_id,
        client_secret,
        refresh_token,
        scope,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_secret_file_gives_its_first_line_and_refuses_what_holds_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let ok = from_file(&file("pw", b"s3cret pass\nignored\n"), "password").unwrap();
        assert_eq!(ok.expose(), "s3cret pass");
        for (path, why) in [
            (file("empty", b""), "has nothing on its first line"),
            (
                file("blank", b"  \nsecond\n"),
                "has nothing on its first line",
            ),
            (file("binary", b"\xff\xfe\x00"), "is not UTF-8 text"),
            (
                file("huge", &vec![b'x'; 70 * 1024]),
                "is larger than 64 KiB",
            ),
            // A device that never ends is read only up to the bound.
            (PathBuf::from("/dev/zero"), "is larger than 64 KiB"),
        ] {
            let e = from_file(&path, "password").err().unwrap().to_string();
            assert!(e.contains(why), "{}: {e}", path.display());
            assert!(
                e.contains("Write the password on the file's first line"),
                "{e}"
            );
        }
        let e = from_file(&dir.path().join("missing"), "password")
            .err()
            .unwrap();
        assert!(matches!(e, Error::SecretFile { .. }), "{e:?}");
    }
}
