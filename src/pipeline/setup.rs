//! Glue from a loaded [`Campaign`] to the pipeline: the contacts to import, the renderer that
//! rebuilds a contact from its ledger row, and the transport/pacing settings from
//! `campaign.toml` (including reading the password from the environment or a file).
//! It must not send anything or touch the ledger itself.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::campaign::{self, Campaign, Contact, ContactEntry};
use crate::store::{DueRow, NewRecipient};
use crate::transport::{Secret, Security, Settings};

use super::{Options, Outgoing, RateOptions, Render, RetryOptions};

/// Errors turning a campaign into pipeline settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "{config}: [smtp] host is not set\n\nAdd host = \"smtp.example.com\" under [smtp] (and port, \
         security, username, password_env)."
    )]
    NoHost { config: PathBuf },
    #[error(
        "{config}: [smtp] password_env names the environment variable {var}, which is not set\n\n\
         Export it before running mailroom (e.g. `read -rs {var}; export {var}`)."
    )]
    PasswordEnv { config: PathBuf, var: String },
    #[error("cannot read the password file {path}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{config}: [smtp] username is set but neither password_env nor password_file is\n\n\
         Add password_env = \"SMTP_PASSWORD\" under [smtp] and export that variable."
    )]
    NoPassword { config: PathBuf },
    #[error(transparent)]
    Campaign(#[from] campaign::Error),
}

/// What reading the contacts found besides the valid rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContactStats {
    pub valid: u64,
    /// Rows `check` calls invalid: bad address or cells, or a message that cannot be rendered
    /// for them (header injection through a field, a missing value, ...).
    pub invalid: u64,
    pub duplicate: u64,
    /// The rows that parsed but cannot be rendered, with the reason: they are not imported (and
    /// a not-yet-sent ledger row for them is treated as removed from the file).
    pub unrenderable: Vec<Unrenderable>,
}

/// A contact whose message cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrenderable {
    pub line: u64,
    pub email: String,
    /// Starts with "line N:" when the campaign module names the line itself.
    pub reason: String,
}

/// The campaign's valid contacts as ledger rows (fields stored as JSON so the ledger alone can
/// render the message later). Invalid and duplicate rows are counted, not imported.
///
/// # Errors
/// When the contacts file cannot be opened.
pub fn recipients<'a>(
    campaign: &'a Campaign,
    stats: &'a mut ContactStats,
) -> Result<impl Iterator<Item = Result<NewRecipient, campaign::Error>> + 'a, campaign::Error> {
    recipients_except_final(campaign, stats, HashSet::new())
}

/// [`recipients`], with the same per-row validation as `mailroom check`: every contact is
/// rendered once, and a row whose message cannot be built is counted invalid and left out,
/// except the addresses in `final_addresses` (already sent or otherwise final in the ledger:
/// they are never rendered again, so checking them would only cost time).
///
/// # Errors
/// When the contacts file cannot be opened.
pub fn recipients_except_final<'a>(
    campaign: &'a Campaign,
    stats: &'a mut ContactStats,
    final_addresses: HashSet<String>,
) -> Result<impl Iterator<Item = Result<NewRecipient, campaign::Error>> + 'a, campaign::Error> {
    let name = campaign.name().to_owned();
    let contacts = campaign.contacts()?;
    let now = std::time::SystemTime::now();
    Ok(contacts.filter_map(move |entry| match entry {
        Err(e) => Some(Err(e)),
        Ok(ContactEntry::Valid(contact)) => {
            if !final_addresses.contains(&contact.email)
                && let Err(e) = campaign.render_at(&contact, now)
            {
                stats.invalid += 1;
                stats.unrenderable.push(Unrenderable {
                    line: contact.line,
                    reason: e.row_reason().map_or_else(|| e.to_string(), str::to_owned),
                    email: contact.email,
                });
                return None;
            }
            stats.valid += 1;
            let fields = serde_json::to_string(&contact.fields).unwrap_or_else(|_| "{}".into());
            Some(Ok(NewRecipient {
                domain: contact.domain().to_owned(),
                token: campaign::recipient_token(&name, &contact.email),
                email: contact.email,
                name: contact.name,
                line: contact.line,
                fields,
            }))
        }
        Ok(ContactEntry::Invalid { .. }) => {
            stats.invalid += 1;
            None
        }
        Ok(ContactEntry::Duplicate { .. }) => {
            stats.duplicate += 1;
            None
        }
    }))
}

/// Renders ledger rows with the campaign's templates.
pub struct CampaignRender(pub Arc<Campaign>);

impl Render for CampaignRender {
    fn render(&self, row: &DueRow) -> Result<Outgoing, String> {
        let fields: BTreeMap<String, String> = serde_json::from_str(&row.fields)
            .map_err(|e| format!("the ledger's stored fields are not valid JSON: {e}"))?;
        let contact = Contact {
            line: row.line,
            email: row.email.clone(),
            name: row.name.clone(),
            fields,
        };
        let rendered = self.0.render(&contact).map_err(|e| e.to_string())?;
        Ok(Outgoing {
            envelope_from: rendered.envelope_from,
            envelope_to: rendered.envelope_to,
            message_id: rendered.message_id,
            bytes: rendered.bytes,
        })
    }
}

/// Transport settings from `[smtp]`, with the password read from the environment variable named
/// by `password_env` or from `password_file` (first line, trailing newline removed).
///
/// # Errors
/// When no host is set, or the password is configured but cannot be read.
pub fn settings(campaign: &Campaign) -> Result<Settings, Error> {
    let smtp = &campaign.config().smtp;
    let config = campaign.config_path().to_owned();
    if smtp.host.trim().is_empty() {
        return Err(Error::NoHost { config });
    }
    let password = match (&smtp.password_env, &smtp.password_file) {
        (Some(var), _) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Some(Secret::new(value)),
            _ => {
                return Err(Error::PasswordEnv {
                    config,
                    var: var.clone(),
                });
            }
        },
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::PasswordFile {
                path: path.clone(),
                source,
            })?;
            Some(Secret::new(
                text.lines().next().unwrap_or_default().to_owned(),
            ))
        }
        (None, None) => None,
    };
    if smtp.username.is_some() && password.is_none() {
        return Err(Error::NoPassword { config });
    }
    Ok(Settings {
        host: smtp.host.clone(),
        port: smtp.port,
        security: match smtp.security {
            campaign::config::Security::StartTls => Security::StartTls,
            campaign::config::Security::Tls => Security::Tls,
            campaign::config::Security::None => Security::None,
        },
        username: smtp.username.clone(),
        password,
        ca_file: smtp.ca_file.clone(),
        hello_name: smtp.hello_name.clone(),
        fallback_ports: smtp.fallback_ports.clone(),
        connect_timeout: smtp.connect_timeout,
        command_timeout: smtp.command_timeout,
        data_timeout: smtp.data_timeout,
        messages_per_connection: smtp.messages_per_connection,
    })
}

/// Pipeline options from `[smtp] connections`, `[rate]` and `[retry]`.
pub fn options(campaign: &Campaign) -> Options {
    let config = campaign.config();
    let rate = &config.rate;
    let retry = &config.retry;
    Options {
        connections: config.smtp.connections.max(1),
        rate: RateOptions {
            per_second: rate.per_second,
            per_minute: rate.per_minute,
            per_hour: rate.per_hour,
            burst: rate.burst,
            per_domain: rate.per_domain.clone(),
            daily_cap: rate.daily_cap,
        },
        retry: RetryOptions {
            backoff: retry.backoff.clone(),
            max_attempts: retry.max_attempts,
            max_age: retry.max_age,
        },
        ..Options::default()
    }
}
