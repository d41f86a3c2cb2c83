//! `[smtp]` and `[[relay]]`: the checks of one relay table (the same for `[smtp]` and each
//! `[[relay]]`), and the rules of several relays: `[smtp]` or `[[relay]]`, never both; every
//! relay named, once; a weight of at least 1; the relay-only keys (`name`, `weight`,
//! `per_second`, `per_minute`, `daily_cap`, `cooloff`) nowhere but in a `[[relay]]`. Each
//! problem names its line. It must not read secrets or resolve hosts (`pipeline::setup` does).

use std::path::Path;
use std::time::Duration;

use super::auth::{self, Problem};
use super::locate::{key_line, relay_key_line, relay_line, table_line};
use super::{Config, Error, Security, SmtpConfig, rate_in_range, short_number};

/// The longest `[smtp]` timeout accepted: past an hour, a stalled relay looks like a hung run.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest `cooloff` accepted: a relay left out for more than a day is better removed.
const MAX_COOLOFF: Duration = Duration::from_secs(86_400);

/// The keys only a `[[relay]]` takes, with whether `smtp` sets each.
fn relay_only_keys(smtp: &SmtpConfig) -> [(&'static str, bool); 6] {
    [
        ("name", smtp.name.is_some()),
        ("weight", smtp.weight.is_some()),
        ("per_second", smtp.per_second.is_some()),
        ("per_minute", smtp.per_minute.is_some()),
        ("daily_cap", smtp.daily_cap.is_some()),
        ("cooloff", smtp.cooloff.is_some()),
    ]
}

/// Most sessions to one relay: each is a worker, a socket and its buffers, and no relay takes
/// this many from one client anyway.
const MAX_CONNECTIONS: usize = 1000;

fn problem(key: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Problem {
    (key, message.into(), fix.into())
}

/// Checks one relay table's connection, security, timeout and authentication keys.
pub(super) fn check_smtp(smtp: &SmtpConfig) -> Result<(), Problem> {
    if smtp.connections == 0 {
        return Err(problem(
            "connections",
            "connections must be at least 1",
            "Set connections = 1 or more.",
        ));
    }
    if smtp.connections > MAX_CONNECTIONS {
        return Err(problem(
            "connections",
            format!(
                "connections = {} is more than mailroom opens to one relay (at most \
                 {MAX_CONNECTIONS})",
                smtp.connections
            ),
            "Relays take a few to a few dozen parallel sessions from one client: set \
             connections = 4 to 50, and add [[relay]] tables to spread the load further.",
        ));
    }
    if smtp.messages_per_connection == 0 {
        return Err(problem(
            "messages_per_connection",
            "messages_per_connection must be at least 1",
            "Set messages_per_connection = 1 or more.",
        ));
    }
    if let Some(name) = &smtp.hello_name
        && let Err(reason) = crate::smtp::check_hello_name(name)
    {
        return Err(problem(
            "hello_name",
            reason,
            "Use the relay-facing host name of this machine, e.g. hello_name = \"mail.example.com\", or remove the key.",
        ));
    }
    if smtp.security == Security::None {
        // The same rules `send` enforces, checked without resolving the host.
        if !smtp.host.is_empty() && !crate::smtp::is_loopback_host(&smtp.host) {
            return Err(problem(
                "security",
                format!(
                    "security = \"none\" sends in plaintext, which is only allowed to this \
                     machine, and {} is not localhost or a loopback address",
                    smtp.host
                ),
                "Use security = \"starttls\" (port 587) or \"tls\" (port 465).",
            ));
        }
        if smtp.username.is_some() {
            return Err(problem(
                "username",
                "refusing to authenticate without TLS (security = \"none\" with a username)",
                "Remove username, or use security = \"starttls\" or \"tls\".",
            ));
        }
    }
    for (key, value) in [
        ("connect_timeout", smtp.connect_timeout),
        ("command_timeout", smtp.command_timeout),
        ("data_timeout", smtp.data_timeout),
    ] {
        if value > MAX_TIMEOUT {
            return Err(problem(
                key,
                format!("{key} = {} s is longer than an hour", value.as_secs()),
                "Use a timeout in seconds of at most 3600, e.g. 60.",
            ));
        }
    }
    auth::validate(smtp)
}

/// The `[[relay]]`-only checks of one relay (its `[smtp]` keys are [`check_smtp`]'s).
fn check_relay(relay: &SmtpConfig) -> Result<(), Problem> {
    match relay.name.as_deref().map(str::trim) {
        None => {
            return Err(problem(
                "name",
                "this [[relay]] has no name",
                "Give every relay a short unique name, e.g. name = \"primary\"; the ledger and reports use it.",
            ));
        }
        Some(name) if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) => {
            return Err(problem(
                "name",
                "a relay name must be 1 to 64 bytes without control characters",
                "Use a short name such as name = \"primary\".",
            ));
        }
        Some(_) => {}
    }
    if relay.host.trim().is_empty() {
        return Err(problem(
            "host",
            "this [[relay]] has no host",
            "Add host = \"smtp.example.com\" to the relay (and port, security, username, password_env).",
        ));
    }
    if relay.weight == Some(0) {
        return Err(problem(
            "weight",
            "weight = 0 would never send through this relay",
            "Use weight = 1 or more, or remove the relay.",
        ));
    }
    for (key, value, unit_secs) in [
        ("per_second", relay.per_second, 1.0),
        ("per_minute", relay.per_minute, 60.0),
    ] {
        if let Some(v) = value
            && !rate_in_range(v, unit_secs)
        {
            return Err(problem(
                key,
                format!("{key} = {} is outside the supported range", short_number(v)),
                "Use a rate between one message a day and 1e9 messages a second, e.g. per_minute = 120.",
            ));
        }
    }
    if relay.daily_cap == Some(0) {
        return Err(problem(
            "daily_cap",
            "daily_cap = 0 would never send through this relay",
            "Use a positive daily_cap, or remove the relay.",
        ));
    }
    if let Some(c) = relay.cooloff
        && (c.is_zero() || c > MAX_COOLOFF)
    {
        return Err(problem(
            "cooloff",
            format!(
                "cooloff = {} s is not between 1 second and a day",
                c.as_secs()
            ),
            "Use a duration such as cooloff = \"5m\".",
        ));
    }
    check_smtp(relay)
}

/// The rules of `[smtp]` against `[[relay]]`, and every relay's own keys.
pub(super) fn validate(config: &Config, text: &str, path: &Path) -> Result<(), Error> {
    let error = |line: Option<u64>, key: String, message: String, fix: String| Error::Config {
        path: path.to_owned(),
        line,
        key,
        message,
        fix,
    };
    if let Some((key, _)) = relay_only_keys(&config.smtp)
        .into_iter()
        .find(|(_, set)| *set)
    {
        return Err(error(
            key_line(text, "smtp", key),
            format!("smtp.{key}"),
            format!("{key} is a [[relay]] key, not an [smtp] one"),
            format!(
                "Remove {key} from [smtp], or describe each relay in its own [[relay]] table (see docs/campaign-toml.md)."
            ),
        ));
    }
    if config.relay.is_empty() {
        return Ok(());
    }
    if let Some(smtp_line) = table_line(text, "smtp") {
        return Err(error(
            relay_line(text, 0),
            "relay".into(),
            format!(
                "campaign.toml has both [smtp] (line {smtp_line}) and [[relay]] tables: use one \
                 or the other"
            ),
            "Move the [smtp] keys into a [[relay]] with a name (one relay), or remove [smtp]."
                .into(),
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, relay) in config.relay.iter().enumerate() {
        if let Err((key, message, fix)) = check_relay(relay) {
            return Err(error(
                relay_key_line(text, i, key).or_else(|| relay_line(text, i)),
                format!("relay.{key}"),
                message,
                fix,
            ));
        }
        let name = relay.name.as_deref().unwrap_or_default().trim();
        if names.contains(&name) {
            return Err(error(
                relay_key_line(text, i, "name"),
                "relay.name".into(),
                format!("two relays are named {name:?}"),
                "Give every [[relay]] its own name.".into(),
            ));
        }
        names.push(name);
    }
    Ok(())
}

impl Config {
    /// The relay tables a send uses: every `[[relay]]`, or `[smtp]` alone.
    pub fn relay_tables(&self) -> Vec<&SmtpConfig> {
        if self.relay.is_empty() {
            vec![&self.smtp]
        } else {
            self.relay.iter().collect()
        }
    }

    /// The largest message every relay takes (`max_message_size`; the smallest of the
    /// relays'), if any says.
    pub fn max_message_size(&self) -> Option<u64> {
        self.relay_tables()
            .into_iter()
            .filter_map(|r| r.max_message_size)
            .min()
    }
}
