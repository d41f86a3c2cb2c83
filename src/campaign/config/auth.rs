//! The `[smtp]` keys that say how mailroom authenticates to the relay: a password
//! (`password_env` / `password_file`) or OAuth2 (`auth = "xoauth2"` with a `token_command`, or
//! a refresh-token grant from `provider` / `token_url`, `client_id_env`, `client_secret_*` and
//! `refresh_token_*`). It checks that the keys make one coherent method; reading the secrets
//! they name is `pipeline::setup`'s job, and this module must not read the environment.

use serde::Deserialize;

use super::SmtpConfig;

/// `[smtp] auth`: how to authenticate when `username` is set.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// AUTH PLAIN or LOGIN with the password from `password_env` / `password_file`.
    #[default]
    Password,
    /// AUTH XOAUTH2 with an OAuth2 access token.
    Xoauth2,
}

/// `[smtp] provider`: who issued the refresh token (sets the token endpoint and scope).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OAuthProvider {
    Google,
    Microsoft,
}

/// A problem with one key: (key, message, fix).
pub(super) type Problem = (&'static str, String, String);

fn problem(key: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
    (key, message.into(), fix.into())
}

/// Whether `name` can be an environment variable name (its value is never echoed: a secret
/// pasted there by mistake must not reach the screen).
pub(super) fn env_name_ok(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks the authentication keys of an `[smtp]` table (or a `[[relay]]`).
pub(super) fn validate(smtp: &SmtpConfig) -> Result<(), Problem> {
    let env_keys = [
        (
            "password_env",
            &smtp.password_env,
            "MAILROOM_SMTP_PASSWORD",
            "password",
        ),
        (
            "client_id_env",
            &smtp.client_id_env,
            "MAILROOM_OAUTH_CLIENT_ID",
            "client id",
        ),
        (
            "client_secret_env",
            &smtp.client_secret_env,
            "MAILROOM_OAUTH_CLIENT_SECRET",
            "client secret",
        ),
        (
            "refresh_token_env",
            &smtp.refresh_token_env,
            "MAILROOM_OAUTH_REFRESH_TOKEN",
            "refresh token",
        ),
    ];
    for (key, value, example, what) in env_keys {
        if let Some(name) = value
            && !env_name_ok(name)
        {
            return Err(problem(
                key,
                format!(
                    "the value of {key} is not an environment variable name (letters, digits and _ \
                     only; the value is not shown in case it is a secret)"
                ),
                format!(
                    "{key} holds the NAME of a variable, e.g. {key} = \"{example}\"; export the {what} in that variable."
                ),
            ));
        }
    }
    let oauth_keys: [(&'static str, bool); 9] = [
        ("token_command", smtp.token_command.is_some()),
        ("provider", smtp.provider.is_some()),
        ("tenant", smtp.tenant.is_some()),
        ("client_id_env", smtp.client_id_env.is_some()),
        ("client_secret_env", smtp.client_secret_env.is_some()),
        ("client_secret_file", smtp.client_secret_file.is_some()),
        ("refresh_token_env", smtp.refresh_token_env.is_some()),
        ("refresh_token_file", smtp.refresh_token_file.is_some()),
        ("token_url", smtp.token_url.is_some()),
    ];
    if smtp.auth == AuthMethod::Password {
        if let Some((key, _)) = oauth_keys.iter().find(|(_, set)| *set) {
            return Err(problem(
                key,
                format!("{key} is an OAuth2 setting, but auth is not \"xoauth2\""),
                "Add auth = \"xoauth2\" to use OAuth2, or remove the OAuth2 keys to use a password.",
            ));
        }
        return Ok(());
    }
    xoauth2(smtp)
}

fn xoauth2(smtp: &SmtpConfig) -> Result<(), Problem> {
    if smtp.username.is_none() {
        return Err(problem(
            "auth",
            "auth = \"xoauth2\" needs username (the mailbox the token is for)",
            "Add username = \"you@example.com\".",
        ));
    }
    if let Some(key) = [
        ("password_env", smtp.password_env.is_some()),
        ("password_file", smtp.password_file.is_some()),
    ]
    .into_iter()
    .find_map(|(key, set)| set.then_some(key))
    {
        return Err(problem(
            key,
            format!("{key} is set but auth = \"xoauth2\" does not use a password"),
            format!("Remove {key}, or remove auth = \"xoauth2\" to log in with the password."),
        ));
    }
    let grant_keys = [
        ("provider", smtp.provider.is_some()),
        ("client_id_env", smtp.client_id_env.is_some()),
        ("refresh_token_env", smtp.refresh_token_env.is_some()),
        ("refresh_token_file", smtp.refresh_token_file.is_some()),
        ("token_url", smtp.token_url.is_some()),
    ];
    if let Some(argv) = &smtp.token_command {
        if argv.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(problem(
                "token_command",
                "token_command is empty",
                "Give the program and its arguments as an array, e.g. token_command = [\"gcloud\", \"auth\", \"print-access-token\"].",
            ));
        }
        if let Some((key, _)) = grant_keys.iter().find(|(_, set)| *set) {
            return Err(problem(
                key,
                format!("{key} belongs to the refresh-token flow, but token_command is set"),
                "Use either token_command, or the refresh-token keys (provider, client_id_env, refresh_token_env), not both.",
            ));
        }
        return Ok(());
    }
    if smtp.provider.is_none() && smtp.token_url.is_none() {
        return Err(problem(
            "auth",
            "auth = \"xoauth2\" needs a token source: token_command, or provider (or token_url) with a refresh token",
            "Add token_command = [\"program\", \"arg\"], or provider = \"google\" (or \"microsoft\"), client_id_env and refresh_token_env.",
        ));
    }
    if smtp.client_id_env.is_none() {
        return Err(problem(
            "client_id_env",
            "the refresh-token flow needs client_id_env",
            "Add client_id_env = \"MAILROOM_OAUTH_CLIENT_ID\" and export the OAuth client id in it.",
        ));
    }
    match (&smtp.refresh_token_env, &smtp.refresh_token_file) {
        (None, None) => {
            return Err(problem(
                "refresh_token_env",
                "the refresh-token flow needs refresh_token_env or refresh_token_file",
                "Add refresh_token_env = \"MAILROOM_OAUTH_REFRESH_TOKEN\" (or refresh_token_file = \"/path\").",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(problem(
                "refresh_token_file",
                "refresh_token_env and refresh_token_file are both set",
                "Keep one of them.",
            ));
        }
        _ => {}
    }
    if smtp.client_secret_env.is_some() && smtp.client_secret_file.is_some() {
        return Err(problem(
            "client_secret_file",
            "client_secret_env and client_secret_file are both set",
            "Keep one of them.",
        ));
    }
    if let Some(tenant) = &smtp.tenant {
        if smtp.provider != Some(OAuthProvider::Microsoft) {
            return Err(problem(
                "tenant",
                "tenant is only used with provider = \"microsoft\"",
                "Remove tenant, or set provider = \"microsoft\".",
            ));
        }
        let ok = !tenant.is_empty()
            && tenant.len() <= 253
            && tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !ok {
            return Err(problem(
                "tenant",
                format!(
                    "{:?} is not a tenant id or domain",
                    crate::display::one_line(tenant)
                ),
                "Use the directory (tenant) id, your domain, or \"organizations\".",
            ));
        }
    }
    if let Some(url) = &smtp.token_url
        && let Err(why) = crate::oauth::http::Endpoint::parse(url)
    {
        return Err(problem(
            "token_url",
            format!(
                "token_url {:?} is not usable: {why}",
                crate::display::one_line(url)
            ),
            "Use the provider's https token endpoint (plain http only to a loopback test server), or remove token_url and set provider.",
        ));
    }
    Ok(())
}
