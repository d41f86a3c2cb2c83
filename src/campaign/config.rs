//! `campaign.toml`: the typed configuration, its defaults, and the validation that can be done
//! from the file alone (addresses, https unsubscribe URL, durations, paths resolved against the
//! toml's folder). It owns turning toml/serde errors into `file:line:column` messages with a fix.
//! It must not read the contacts or compile templates (that is `contacts` and `template`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::Error;
use super::address;
pub use super::deliverability::{GuardSection, ProvidersSection};
use crate::model::DsnNotify;

mod auth;
pub use auth::{AuthMethod, OAuthProvider};
mod signing;
pub use signing::{DkimSection, DnsSection, SecondSignature, parse_resolver};

mod locate;
mod ops;
mod relays;
pub(crate) use locate::key_line;
use locate::toml_error;
pub use ops::{ScheduleSection, SeedsSection, TestSection};

/// The whole validated `campaign.toml`. Every path is absolute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    pub campaign: CampaignSection,
    pub contacts: ContactsSection,
    #[serde(default)]
    pub smtp: SmtpConfig,
    /// `[[relay]]`: several relays instead of `[smtp]` (never both; see `config::relays`).
    #[serde(default)]
    pub relay: Vec<SmtpConfig>,
    #[serde(default)]
    pub rate: RateConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub unsubscribe: Option<UnsubscribeSection>,
    #[serde(default)]
    pub bounces: BouncesSection,
    #[serde(default)]
    pub store: StoreSection,
    /// The circuit breaker.
    #[serde(default)]
    pub guard: GuardSection,
    /// MX lookups of recipient domains.
    #[serde(default)]
    pub providers: ProvidersSection,
    /// `[dkim]`: sign every message; absent means the relay must sign.
    #[serde(default)]
    pub dkim: Option<DkimSection>,
    #[serde(default)]
    pub dns: DnsSection,
    #[serde(default)]
    pub test: TestSection,
    #[serde(default)]
    pub seeds: SeedsSection,
    #[serde(default)]
    pub schedule: Option<ScheduleSection>,
}

/// `[campaign]`: who sends what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CampaignSection {
    /// Identity of the campaign in the ledger, tokens and Message-IDs: keep it stable.
    pub name: String,
    /// `"Display Name <addr@example.com>"` or a bare address; validated at load.
    pub from: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// A Handlebars template string.
    pub subject: String,
    #[serde(default)]
    pub text: Option<PathBuf>,
    #[serde(default)]
    pub html: Option<PathBuf>,
    #[serde(default)]
    pub markdown: Option<PathBuf>,
    /// Extra headers; values are Handlebars templates rendered without HTML escaping.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// RFC 2919 List-Id (`"news.example.com"` or `"Name <news.example.com>"`); default derived
    /// from the From address, the same for every campaign of that sender.
    #[serde(default)]
    pub list_id: Option<String>,
    /// Gmail's Feedback-ID (`"{campaign}:newsletter:sender"`); none by default.
    #[serde(default)]
    pub feedback_id: Option<String>,
    /// With only an `html` body, also send a text/plain alternative generated from it.
    #[serde(default = "default_true")]
    pub generate_text: bool,
    /// Files attached to every message, relative to the campaign folder (and confined to it).
    #[serde(default)]
    pub attachments: Vec<String>,
}

/// `[contacts]`: where the recipients are and which columns matter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ContactsSection {
    pub path: PathBuf,
    #[serde(default = "default_email_column")]
    pub email_column: String,
    /// `None` means: the column `name` if the header has one.
    #[serde(default)]
    pub name_column: Option<String>,
    #[serde(default = "default_delimiter", deserialize_with = "de_delimiter")]
    pub delimiter: u8,
    /// The file's character set as a WHATWG label (`"windows-1252"`, `"utf-16"`, ...); `None`
    /// means UTF-8 (a UTF-16 byte order mark is honoured either way). See `charset`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// A column naming files to attach to that row's message (`;`-separated, relative to the
    /// campaign folder and confined to it).
    #[serde(default)]
    pub attachment_column: Option<String>,
    /// A column holding each contact's own IANA time zone for `[schedule]` (empty: the
    /// schedule's zone).
    #[serde(default)]
    pub timezone_column: Option<String>,
}

impl ContactsSection {
    /// The encoding `encoding` names; `None` for UTF-8. Validated at load, so never an error.
    pub(crate) fn charset(&self) -> Option<&'static encoding_rs::Encoding> {
        self.encoding
            .as_deref()
            .and_then(|l| super::charset::resolve(l).ok().flatten())
    }
}

pub use crate::model::Security;

/// `[smtp]`: the relay. `host` is empty when not configured (only `send` needs it). The same
/// table is one `[[relay]]` entry, which also takes the relay-only keys at the end (`name`,
/// `weight`, ...): one type keeps every `[smtp]` key valid in a relay with its line numbers, and
/// `config::relays` refuses the relay-only keys in `[smtp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SmtpConfig {
    #[serde(default)]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub username: Option<String>,
    /// The NAME of the environment variable holding the password, never the password.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub hello_name: Option<String>,
    #[serde(default = "default_connections")]
    pub connections: usize,
    #[serde(default = "default_messages_per_connection")]
    pub messages_per_connection: usize,
    #[serde(default)]
    pub fallback_ports: Vec<u16>,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_seconds")]
    pub connect_timeout: Duration,
    #[serde(default = "default_command_timeout", deserialize_with = "de_seconds")]
    pub command_timeout: Duration,
    /// The wait for the reply after the final "." (RFC 5321 §4.5.3.2.6 says 10 minutes).
    #[serde(default = "default_data_timeout", deserialize_with = "de_seconds")]
    pub data_timeout: Duration,
    /// Password (PLAIN/LOGIN) or OAuth2 (XOAUTH2); the OAuth2 keys below are checked in
    /// `config::auth`.
    #[serde(default)]
    pub auth: AuthMethod,
    /// Program and arguments (no shell) printing an access token or `{"access_token", ...}`.
    #[serde(default)]
    pub token_command: Option<Vec<String>>,
    #[serde(default)]
    pub provider: Option<OAuthProvider>,
    /// Microsoft tenant (directory id or domain); `common` when unset.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub client_id_env: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub refresh_token_env: Option<String>,
    #[serde(default)]
    pub refresh_token_file: Option<PathBuf>,
    /// Overrides the provider's token endpoint (plain http only to loopback, for tests).
    #[serde(default)]
    pub token_url: Option<String>,
    /// Overrides the scope asked for with the refresh grant.
    #[serde(default)]
    pub scope: Option<String>,
    /// The largest message (bytes) the relay is known to take: `check` compares every message
    /// with it, `send` fails a larger one without sending it (as it does past the relay's SIZE).
    #[serde(default)]
    pub max_message_size: Option<u64>,
    /// `[[relay]]` only: the relay's name in the ledger and reports (required, unique).
    #[serde(default)]
    pub name: Option<String>,
    /// `[[relay]]` only: its share of the messages (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// `[[relay]]` only: its own pace, on top of `[rate]`.
    #[serde(default, deserialize_with = "de_opt_number")]
    pub per_second: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_number")]
    pub per_minute: Option<f64>,
    /// `[[relay]]` only: most messages handed to it in any 24 hours.
    #[serde(default)]
    pub daily_cap: Option<u64>,
    /// `[[relay]]` only: how long it is left out after it failed (default 5 minutes).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub cooloff: Option<Duration>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: String::new(),
            port: default_port(),
            security: Security::default(),
            username: None,
            password_env: None,
            password_file: None,
            ca_file: None,
            hello_name: None,
            connections: default_connections(),
            messages_per_connection: default_messages_per_connection(),
            fallback_ports: Vec::new(),
            connect_timeout: default_connect_timeout(),
            command_timeout: default_command_timeout(),
            data_timeout: default_data_timeout(),
            auth: AuthMethod::default(),
            token_command: None,
            provider: None,
            tenant: None,
            client_id_env: None,
            client_secret_env: None,
            client_secret_file: None,
            refresh_token_env: None,
            refresh_token_file: None,
            token_url: None,
            scope: None,
            max_message_size: None,
            name: None,
            weight: None,
            per_second: None,
            per_minute: None,
            daily_cap: None,
            cooloff: None,
        }
    }
}

/// `[rate]`: pacing. When no `per_*` key is given, `per_second` is 10.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateConfig {
    #[serde(default, deserialize_with = "de_opt_number")]
    pub per_second: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_number")]
    pub per_minute: Option<f64>,
    #[serde(default, deserialize_with = "de_opt_number")]
    pub per_hour: Option<f64>,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Messages per minute per recipient domain.
    #[serde(default, deserialize_with = "de_number_map")]
    pub per_domain: BTreeMap<String, f64>,
    #[serde(default)]
    pub daily_cap: Option<u64>,
    /// Warm-up: the most messages on day 1, 2, ... of this From domain in this ledger; the last
    /// value holds after the list (see `crate::schedule::allowance`).
    #[serde(default)]
    pub warmup: Vec<u64>,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            per_second: Some(DEFAULT_PER_SECOND),
            per_minute: None,
            per_hour: None,
            burst: default_burst(),
            per_domain: BTreeMap::new(),
            daily_cap: None,
            warmup: Vec::new(),
        }
    }
}

/// `[retry]`: what happens after a 4xx or a lost connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    #[serde(default = "default_backoff", deserialize_with = "de_duration_list")]
    pub backoff: Vec<Duration>,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_max_age", deserialize_with = "de_duration")]
    pub max_age: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            backoff: default_backoff(),
            max_attempts: default_max_attempts(),
            max_age: default_max_age(),
        }
    }
}

/// `[unsubscribe]`: RFC 8058 one-click unsubscribe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UnsubscribeSection {
    /// An https URL template, e.g. `https://example.com/u/{{token}}`.
    pub url: String,
    /// An address or `mailto:` URI template added as the second List-Unsubscribe entry.
    #[serde(default)]
    pub mailto: Option<String>,
}

/// `[bounces]`: where bounces go, and which DSNs to ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BouncesSection {
    /// VERP envelope sender such as `bounces+{token}@example.com`.
    #[serde(default)]
    pub return_path: Option<String>,
    /// When relays that speak DSN should report (RFC 3461 NOTIFY): failures and delays unless
    /// told otherwise.
    #[serde(
        default = "super::deliverability::default_notify",
        deserialize_with = "super::deliverability::de_notify"
    )]
    pub notify: DsnNotify,
}

impl Default for BouncesSection {
    fn default() -> Self {
        BouncesSection {
            return_path: None,
            notify: DsnNotify::DEFAULT,
        }
    }
}

/// `[store]`: the ledger file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreSection {
    /// Default `mailroom.db` beside campaign.toml; always absolute after load.
    #[serde(default)]
    pub path: PathBuf,
}

const DEFAULT_PER_SECOND: f64 = 10.0;

fn default_true() -> bool {
    true
}
fn default_email_column() -> String {
    "email".to_owned()
}
fn default_delimiter() -> u8 {
    b','
}
fn default_port() -> u16 {
    587
}
fn default_connections() -> usize {
    4
}
fn default_messages_per_connection() -> usize {
    100
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_command_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_data_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_burst() -> u32 {
    1
}
fn default_backoff() -> Vec<Duration> {
    [30 * 60, 3600, 2 * 3600, 4 * 3600, 8 * 3600]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}
fn default_max_attempts() -> u32 {
    6
}
fn default_max_age() -> Duration {
    Duration::from_secs(3 * 86_400)
}

fn de_delimiter<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_bytes() {
        [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => Ok(*b),
        _ => Err(de::Error::custom(format!(
            "delimiter must be one ASCII character such as \",\", \";\" or \"\\t\", not {s:?}"
        ))),
    }
}

fn number(v: toml::Value) -> Result<f64, String> {
    match v {
        // Rates are small; the cast cannot lose meaningful precision.
        #[allow(clippy::cast_precision_loss)]
        toml::Value::Integer(i) => Ok(i as f64),
        toml::Value::Float(f) => Ok(f),
        other => Err(format!("expected a number, found {}", other.type_str())),
    }
}

/// True when `per_unit` messages per `unit_secs` seconds is between one a day and 1e9 a second.
fn rate_in_range(per_unit: f64, unit_secs: f64) -> bool {
    let per_second = per_unit / unit_secs;
    (1.0 / 86_400.0..=1e9).contains(&per_second)
}

fn positive(f: f64) -> Result<f64, String> {
    if f.is_finite() && f > 0.0 {
        Ok(f)
    } else {
        Err(format!("expected a positive number, found {f}"))
    }
}

fn de_opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = toml::Value::deserialize(d)?;
    number(v)
        .and_then(positive)
        .map(Some)
        .map_err(de::Error::custom)
}

fn de_number_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let m = BTreeMap::<String, toml::Value>::deserialize(d)?;
    m.into_iter()
        .map(|(k, v)| {
            number(v)
                .and_then(positive)
                .map(|f| (k.to_ascii_lowercase(), f))
                .map_err(|e| de::Error::custom(format!("per_domain.{k}: {e}")))
        })
        .collect()
}

fn de_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = toml::Value::deserialize(d)?;
    let secs = number(v)
        .and_then(positive)
        .map_err(|e| de::Error::custom(format!("{e} (timeouts are in seconds, e.g. 30 or 2.5)")))?;
    Duration::try_from_secs_f64(secs).map_err(|e| de::Error::custom(e.to_string()))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_duration_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| parse_duration(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(de::Error::custom)
}

/// Parses durations such as `"90s"`, `"30m"`, `"1h30m"`, `"3d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {s:?}: use a number with a unit s, m, h or d, such as \"30m\" or \"3d\""
        )
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut seen_unit = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        digits.clear();
        seen_unit = true;
    }
    if !digits.is_empty() || !seen_unit {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A number for a message: plain when short, else in scientific notation (`1e300`, not 301
/// digits).
fn short_number(v: f64) -> String {
    let plain = v.to_string();
    if plain.len() <= 16 {
        plain
    } else {
        format!("{v:e}")
    }
}

impl Config {
    /// Parses and validates `text`, read from `path`; relative paths resolve against `root`.
    pub(crate) fn parse(text: &str, path: &Path, root: &Path) -> Result<Config, Error> {
        let mut config: Config = toml::from_str(text).map_err(|e| toml_error(&e, text, path))?;
        config.validate(text, path)?;
        config.resolve(root);
        Ok(config)
    }

    fn validate(&self, text: &str, path: &Path) -> Result<(), Error> {
        let invalid = |section: &str, key: &str, message: String, fix: &str| Error::Config {
            path: path.to_owned(),
            line: key_line(text, section, key),
            key: format!("{section}.{key}"),
            message,
            fix: fix.to_owned(),
        };
        let c = &self.campaign;
        // The name travels in the X-Mailroom-Campaign header, unencoded, so bounces that quote
        // it can be matched: keep it one short line.
        if c.name.trim().is_empty() || c.name.chars().any(char::is_control) || c.name.len() > 100 {
            return Err(invalid(
                "campaign",
                "name",
                "the campaign name is empty, longer than 100 bytes or contains control characters"
                    .into(),
                "Set a short stable name such as name = \"2026-spring-newsletter\".",
            ));
        }
        if let Err(reason) = address::parse_mailbox(&c.from) {
            return Err(invalid(
                "campaign",
                "from",
                format!("{:?} is not a valid sender address: {reason}", c.from),
                "Use from = \"Your Name <you@example.com>\" or from = \"you@example.com\".",
            ));
        }
        if let Some(r) = &c.reply_to
            && let Err(reason) = address::parse_mailbox(r)
        {
            return Err(invalid(
                "campaign",
                "reply_to",
                format!("{r:?} is not a valid address: {reason}"),
                "Use reply_to = \"Name <replies@example.com>\" or remove the key.",
            ));
        }
        if c.text.is_none() && c.html.is_none() && c.markdown.is_none() {
            return Err(Error::Config {
                path: path.to_owned(),
                line: key_line(text, "campaign", "subject"),
                key: "campaign".into(),
                message: "[campaign] names no body template".into(),
                fix: "Add text = \"body.txt.hbs\", html = \"body.html.hbs\" or markdown = \"body.md.hbs\" to [campaign].".into(),
            });
        }
        if c.markdown.is_some() && (c.text.is_some() || c.html.is_some()) {
            return Err(invalid(
                "campaign",
                "markdown",
                "markdown cannot be combined with text or html: it renders both parts".into(),
                "Keep either markdown, or text and/or html.",
            ));
        }
        for name in c.headers.keys() {
            let lower = name.to_ascii_lowercase();
            let valid_name = !name.is_empty()
                && name.len() <= 76
                && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !valid_name {
                return Err(invalid(
                    "campaign.headers",
                    name,
                    format!("{name:?} is not a valid header name"),
                    "Header names are printable ASCII without spaces or colons, e.g. \"X-Campaign-Ref\".",
                ));
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(invalid(
                    "campaign.headers",
                    name,
                    format!("the header {name} is written by mailroom itself"),
                    "Remove it from [campaign.headers]; use the matching [campaign] or [unsubscribe] key instead.",
                ));
            }
        }
        if self.contacts.email_column.trim().is_empty() {
            return Err(invalid(
                "contacts",
                "email_column",
                "email_column is empty".into(),
                "Name the CSV column holding addresses, e.g. email_column = \"email\".",
            ));
        }
        if let Some(sc) = &self.schedule
            && let Err((key, reason)) = sc.window()
        {
            return Err(invalid(
                "schedule",
                key,
                reason,
                "See [schedule] in docs/campaign-toml.md, e.g. timezone = \"Europe/Berlin\", days = [\"mon\", \"tue\"], hours = \"09:00-17:30\".",
            ));
        }
        if self.contacts.timezone_column.is_some() && self.schedule.is_none() {
            return Err(invalid(
                "contacts",
                "timezone_column",
                "timezone_column needs a [schedule]: a zone only matters for a send window".into(),
                "Add [schedule] with timezone, days and hours, or remove timezone_column.",
            ));
        }
        if self.rate.warmup.contains(&0) {
            return Err(invalid(
                "rate",
                "warmup",
                "a warm-up day of 0 messages would stop the campaign for that day".into(),
                "Use growing positive numbers, e.g. warmup = [50, 100, 250, 500, 1000].",
            ));
        }
        if address::control_char_problem(&self.test.subject_prefix).is_some() {
            return Err(invalid(
                "test",
                "subject_prefix",
                "subject_prefix contains a line break or another control character".into(),
                "Use plain text such as subject_prefix = \"[TEST] \".",
            ));
        }
        for a in &self.seeds.addresses {
            if let Err(reason) = address::normalize(a) {
                return Err(invalid(
                    "seeds",
                    "addresses",
                    format!("{a:?} is not a valid address: {reason}"),
                    "List plain addresses of mailboxes you can read, e.g. addresses = [\"seed@gmail.com\"].",
                ));
            }
        }
        if let Some(label) = &self.contacts.encoding
            && let Err(reason) = super::charset::resolve(label)
        {
            return Err(invalid(
                "contacts",
                "encoding",
                reason,
                "Use a label such as \"windows-1252\" (Excel on Windows), \"iso-8859-15\", \"utf-16\" or \"shift_jis\" (the WHATWG Encoding Standard lists them), or remove the key for UTF-8.",
            ));
        }
        if let Some(u) = &self.unsubscribe {
            let scheme_ok = u
                .url
                .trim_start()
                .get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("https://"));
            if !scheme_ok {
                return Err(invalid(
                    "unsubscribe",
                    "url",
                    format!("unsubscribe url {:?} is not https", u.url),
                    "One-click unsubscribe (RFC 8058) needs an https URL, e.g. url = \"https://example.com/unsubscribe/{{token}}\".",
                ));
            }
            if let Some(m) = &u.mailto {
                let addr = m.strip_prefix("mailto:").unwrap_or(m);
                let addr = addr.split('?').next().unwrap_or(addr);
                if !addr.contains("{{") && address::normalize(addr).is_err() {
                    return Err(invalid(
                        "unsubscribe",
                        "mailto",
                        format!("{m:?} is not a valid mailto address"),
                        "Use mailto = \"unsubscribe@example.com\" or a mailto: URI.",
                    ));
                }
            }
        }
        if let Some(rp) = &self.bounces.return_path {
            let probe = rp.replace("{token}", "abcdefgh01234567");
            if let Err(reason) = address::normalize(&probe) {
                return Err(invalid(
                    "bounces",
                    "return_path",
                    format!("{rp:?} is not a valid envelope address: {reason}"),
                    "Use a VERP pattern such as return_path = \"bounces+{token}@example.com\".",
                ));
            }
        }
        if let Err((key, message, fix)) = relays::check_smtp(&self.smtp) {
            return Err(invalid("smtp", key, message, &fix));
        }
        relays::validate(self, text, path)?;
        if self.retry.max_age > MAX_RETRY_AGE {
            return Err(invalid(
                "retry",
                "max_age",
                format!(
                    "max_age is {} days, longer than the {} days a retry is worth",
                    self.retry.max_age.as_secs() / 86_400,
                    MAX_RETRY_AGE.as_secs() / 86_400
                ),
                "Use at most max_age = \"30d\" (receivers give up on deferred mail after a few days).",
            ));
        }
        if let Some((i, b)) = self
            .retry
            .backoff
            .iter()
            .enumerate()
            .find(|(_, b)| **b > self.retry.max_age)
        {
            return Err(invalid(
                "retry",
                "backoff",
                format!(
                    "backoff[{i}] = {} s is longer than max_age ({} s): that retry could never happen",
                    b.as_secs(),
                    self.retry.max_age.as_secs()
                ),
                "Make every backoff step shorter than max_age, e.g. backoff = [\"30m\", \"1h\", \"4h\"].",
            ));
        }
        // A pace slower than one message a day, or faster than a billion a second, is a typo
        // (and would overflow the pacer's interval arithmetic).
        let rates = [
            ("per_second", self.rate.per_second, 1.0),
            ("per_minute", self.rate.per_minute, 60.0),
            ("per_hour", self.rate.per_hour, 3600.0),
        ];
        for (key, value, unit_secs) in rates {
            if let Some(v) = value
                && !rate_in_range(v, unit_secs)
            {
                return Err(invalid(
                    "rate",
                    key,
                    format!("{key} = {} is outside the supported range", short_number(v)),
                    "Use a rate between one message a day and 1e9 messages a second, e.g. per_minute = 120.",
                ));
            }
        }
        for (domain, v) in &self.rate.per_domain {
            if !rate_in_range(*v, 60.0) {
                return Err(invalid(
                    "rate.per_domain",
                    domain,
                    format!(
                        "{domain} = {} messages per minute is outside the supported range",
                        short_number(*v)
                    ),
                    "Use between one message a day (0.0007) and 6e10 messages a minute.",
                ));
            }
        }
        if self.rate.burst == 0 {
            return Err(invalid(
                "rate",
                "burst",
                "burst must be at least 1".into(),
                "Set burst = 1 for smooth pacing.",
            ));
        }
        if let Err(e) = signing::validate(
            self.dkim.as_ref(),
            &self.dns,
            c.list_id.as_deref(),
            c.feedback_id.as_deref(),
        ) {
            return Err(invalid(e.section, e.key, e.message, e.fix));
        }
        if self.retry.max_attempts == 0 {
            return Err(invalid(
                "retry",
                "max_attempts",
                "max_attempts must be at least 1".into(),
                "Set max_attempts = 1 or more.",
            ));
        }
        if let Err((key, message, fix)) = super::deliverability::check_guard(&self.guard) {
            return Err(invalid("guard", key, message, fix));
        }
        Ok(())
    }

    fn resolve(&mut self, root: &Path) {
        let abs = |p: &Path| -> PathBuf { root.join(p) };
        let c = &mut self.campaign;
        for p in [&mut c.text, &mut c.html, &mut c.markdown]
            .into_iter()
            .flatten()
        {
            *p = abs(p);
        }
        self.contacts.path = abs(&self.contacts.path);
        if let Some(d) = &mut self.dkim {
            d.resolve(root);
        }
        let smtp = &mut self.smtp;
        for p in [
            &mut smtp.password_file,
            &mut smtp.ca_file,
            &mut smtp.client_secret_file,
            &mut smtp.refresh_token_file,
            &mut self.seeds.file,
        ]
        .into_iter()
        .flatten()
        {
            *p = abs(p);
        }
        if self.store.path.as_os_str().is_empty() {
            self.store.path = root.join("mailroom.db");
        } else {
            self.store.path = abs(&self.store.path);
        }
        if self.rate.per_second.is_none()
            && self.rate.per_minute.is_none()
            && self.rate.per_hour.is_none()
        {
            self.rate.per_second = Some(DEFAULT_PER_SECOND);
        }
    }
}

/// The longest `[retry] max_age` accepted (every retry is capped by it).
const MAX_RETRY_AGE: Duration = Duration::from_secs(30 * 86_400);

/// Headers mailroom writes itself; a custom header of the same name would duplicate them.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "reply-to",
    "return-path",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "feedback-id",
    "dkim-signature",
    "x-mailroom-campaign",
    "x-mailroom-token",
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::locate::line_col;
    use super::*;

    const MINIMAL: &str = r#"
[campaign]
name = "t"
from = "News <news@example.com>"
subject = "Hi"
text = "body.txt"

[contacts]
path = "contacts.csv"
"#;

    #[test]
    fn durations_parse_units_and_compounds() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("3d").unwrap(), Duration::from_secs(259_200));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        for bad in ["", "30", "m", "3w", "1.5h", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        let t = "ab\ncdé\nx";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 8), (3, 1));
        assert_eq!(line_col(t, 7), (2, 4));
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::parse(MINIMAL, Path::new("/c/campaign.toml"), Path::new("/c")).unwrap();
        assert_eq!(c.smtp.port, 587);
        assert_eq!(c.smtp.security, Security::StartTls);
        assert_eq!(c.smtp.connections, 4);
        assert_eq!(c.smtp.messages_per_connection, 100);
        assert_eq!(c.smtp.connect_timeout, Duration::from_secs(15));
        assert_eq!(c.smtp.command_timeout, Duration::from_secs(60));
        assert_eq!(c.smtp.data_timeout, Duration::from_secs(600));
        assert_eq!(c.rate.per_second, Some(10.0));
        assert_eq!(c.rate.burst, 1);
        assert_eq!(c.retry.max_attempts, 6);
        assert_eq!(c.retry.max_age, Duration::from_secs(3 * 86_400));
        assert_eq!(c.retry.backoff.len(), 5);
        assert_eq!(c.contacts.email_column, "email");
        assert_eq!(c.contacts.delimiter, b',');
        assert_eq!(c.store.path, Path::new("/c/mailroom.db"));
        assert_eq!(c.contacts.path, Path::new("/c/contacts.csv"));
        assert_eq!(c.campaign.text.as_deref(), Some(Path::new("/c/body.txt")));
    }

    #[test]
    fn explicit_sections_parse() {
        let t = format!(
            "{MINIMAL}\n[smtp]\nhost = \"smtp.example.com\"\nport = 465\nsecurity = \"tls\"\nconnect_timeout = 2.5\ndata_timeout = 30\n\n[rate]\nper_minute = 120\nburst = 3\n\n[rate.per_domain]\n\"Gmail.com\" = 5\n\n[retry]\nbackoff = [\"1m\", \"1h\"]\nmax_age = \"1d\"\n"
        );
        let c = Config::parse(&t, Path::new("/c/campaign.toml"), Path::new("/c")).unwrap();
        assert_eq!(c.smtp.security, Security::Tls);
        assert_eq!(c.smtp.connect_timeout, Duration::from_millis(2500));
        assert_eq!(c.smtp.data_timeout, Duration::from_secs(30));
        assert_eq!(c.rate.per_second, None);
        assert_eq!(c.rate.per_minute, Some(120.0));
        assert_eq!(c.rate.per_domain.get("gmail.com"), Some(&5.0));
        assert_eq!(
            c.retry.backoff,
            vec![Duration::from_secs(60), Duration::from_secs(3600)]
        );
    }

    #[test]
    fn unknown_key_names_line_and_section() {
        let t = MINIMAL.replace("subject = \"Hi\"", "subject = \"Hi\"\nsubjet = \"x\"");
        let e = Config::parse(&t, Path::new("c.toml"), Path::new("/")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("c.toml:6:1:"), "{s}");
        assert!(s.contains("subjet") && s.contains("[campaign]"), "{s}");
    }

    #[test]
    fn password_key_is_rejected_with_advice() {
        let t = format!("{MINIMAL}\n[smtp]\npassword = \"hunter2\"\n");
        let s = Config::parse(&t, Path::new("c.toml"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("password_env") && !s.contains("hunter2"), "{s}");
    }

    #[test]
    fn http_unsubscribe_is_rejected_at_its_line() {
        let t = format!("{MINIMAL}\n[unsubscribe]\nurl = \"http://x.example/u/{{{{token}}}}\"\n");
        let e = Config::parse(&t, Path::new("c.toml"), Path::new("/")).unwrap_err();
        assert_eq!(e.line(), Some(12));
        assert!(e.to_string().contains("https"));
    }

    #[test]
    fn absurd_rates_are_rejected_at_their_line() {
        for (key, value) in [
            ("per_second", "1e-300"),
            ("per_hour", "0.001"),
            ("per_minute", "1e300"),
        ] {
            let t = format!("{MINIMAL}\n[rate]\n{key} = {value}\n");
            let e = Config::parse(&t, Path::new("c.toml"), Path::new("/")).unwrap_err();
            assert_eq!(e.line(), Some(12), "{key}");
            assert!(e.to_string().contains("outside the supported range"), "{e}");
        }
        let t = format!("{MINIMAL}\n[rate.per_domain]\n\"example.com\" = 1e-9\n");
        let e = Config::parse(&t, Path::new("c.toml"), Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("example.com"), "{e}");
        // The benchmark's "out of the way" rate stays valid.
        let t = format!("{MINIMAL}\n[rate]\nper_second = 1000000\n");
        assert!(Config::parse(&t, Path::new("c.toml"), Path::new("/")).is_ok());
    }
}
