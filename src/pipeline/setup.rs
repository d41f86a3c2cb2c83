//! Glue from a loaded [`Campaign`] to the pipeline: the contacts to import, the renderer that
//! rebuilds a contact from its ledger row, and the transport/pacing settings from
//! `campaign.toml` (including reading the password from the environment or a file).
//! It must not send anything or touch the ledger itself.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::campaign::{self, Campaign, Contact, ContactEntry};
use crate::model::Shard;
use crate::store::{DueRow, NewRecipient};
use crate::transport::Settings;

use super::{Options, Outgoing, RateOptions, Render, RetryOptions};

/// Errors turning a campaign into pipeline settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "{config}: {table} host is not set\n\nAdd host = \"smtp.example.com\" under {table} (and port, \
         security, username, password_env)."
    )]
    NoHost { config: PathBuf, table: String },
    #[error(
        "{config}: {table} {key} names the environment variable {var}, which is not set or is \
         empty\n\nExport it before running mailroom (e.g. `read -rs {var}; export {var}`)."
    )]
    SecretEnv {
        config: PathBuf,
        table: String,
        key: &'static str,
        var: String,
    },
    #[error("cannot read the {what} file {path}")]
    SecretFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the {what} file {path} {why}\n\nWrite the {what} on the file's first line (and nothing \
         else), or name the right file."
    )]
    SecretFileContent {
        what: &'static str,
        path: PathBuf,
        why: &'static str,
    },
    #[error("{config}: {table} token_url: {why}")]
    TokenUrl {
        config: PathBuf,
        table: String,
        why: String,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::Error),
    #[error(
        "{config}: --imap-auth xoauth2 uses the OAuth2 settings of [smtp], which has no auth = \"xoauth2\"\n\n\
         Configure [smtp] auth = \"xoauth2\" with token_command or the refresh-token keys (see docs/oauth.md)."
    )]
    NoOAuth { config: PathBuf },
    #[error(
        "{config}: {table} username is set but neither password_env nor password_file is\n\n\
         Add password_env = \"MAILROOM_SMTP_PASSWORD\" under {table} and export that variable (or use auth = \"xoauth2\")."
    )]
    NoPassword { config: PathBuf, table: String },
    #[error(transparent)]
    Campaign(#[from] campaign::Error),
}

/// The table errors name when nothing more precise is known.
pub(crate) const SMTP_TABLE: &str = "[smtp]";

impl Error {
    /// The same error, naming `table` (a `[[relay]]`) instead of `[smtp]`.
    fn in_table(self, table: &str) -> Error {
        let table = table.to_owned();
        match self {
            Error::NoHost { config, .. } => Error::NoHost { config, table },
            Error::SecretEnv {
                config, key, var, ..
            } => Error::SecretEnv {
                config,
                table,
                key,
                var,
            },
            Error::TokenUrl { config, why, .. } => Error::TokenUrl { config, table, why },
            Error::NoPassword { config, .. } => Error::NoPassword { config, table },
            other => other,
        }
    }
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
    /// Valid rows that belong to another shard (`send --shard`): not imported here.
    pub other_shards: u64,
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
    let first_body = std::cell::Cell::new(true);
    Ok(contacts.filter_map(move |entry| {
        stats.take(check_entry(
            campaign,
            &name,
            &final_addresses,
            None,
            &first_body,
            entry,
        ))
    }))
}

/// One row of the contacts file, checked for import.
enum Checked {
    Row(NewRecipient),
    Invalid,
    Duplicate,
    Unrenderable(Unrenderable),
    OtherShard,
    Failed(campaign::Error),
}

impl ContactStats {
    /// Counts `checked` and hands back what the import gets (a row or an error).
    fn take(&mut self, checked: Checked) -> Option<Result<NewRecipient, campaign::Error>> {
        match checked {
            Checked::Row(row) => {
                self.valid += 1;
                Some(Ok(row))
            }
            Checked::Invalid => {
                self.invalid += 1;
                None
            }
            Checked::Duplicate => {
                self.duplicate += 1;
                None
            }
            Checked::Unrenderable(row) => {
                self.invalid += 1;
                self.unrenderable.push(row);
                None
            }
            Checked::OtherShard => {
                self.other_shards += 1;
                None
            }
            Checked::Failed(e) => Some(Err(e)),
        }
    }
}

/// The check `mailroom check` makes of one contacts entry: a valid row whose message cannot be
/// rendered is not importable (unless its address is final in the ledger already).
/// `first_body` is true until a row's bodies were rendered (see `Campaign::check_row`).
/// With `shard`, a valid row of another shard is only counted.
fn check_entry(
    campaign: &Campaign,
    name: &str,
    final_addresses: &HashSet<String>,
    shard: Option<Shard>,
    first_body: &std::cell::Cell<bool>,
    entry: Result<ContactEntry, campaign::Error>,
) -> Checked {
    match entry {
        Err(e) => Checked::Failed(e),
        Ok(ContactEntry::Valid(contact))
            if shard
                .is_some_and(|s| !s.contains(campaign::recipient_bucket(name, &contact.email))) =>
        {
            Checked::OtherShard
        }
        Ok(ContactEntry::Valid(contact)) => {
            // Headers for every row; bodies for the first row a thread checks (if they render
            // for one row they render for all, unless they vary by row: then for every row).
            if !final_addresses.contains(&contact.email) {
                let bodies = first_body.get();
                if let Err(e) = campaign.check_row(&contact, bodies) {
                    return Checked::Unrenderable(Unrenderable {
                        line: contact.line,
                        reason: e.row_reason().map_or_else(|| e.to_string(), str::to_owned),
                        email: contact.email,
                    });
                }
                // Rendered in full once: the bodies render for every row from now on.
                first_body.set(false);
            }
            let fields =
                super::fields::encode(&contact.fields, &contact.email, contact.name.as_deref());
            let token = campaign::recipient_token(name, &contact.email);
            Checked::Row(NewRecipient {
                token,
                email: contact.email,
                name: contact.name,
                line: contact.line,
                fields,
            })
        }
        Ok(ContactEntry::Invalid { .. }) => Checked::Invalid,
        Ok(ContactEntry::Duplicate { .. }) => Checked::Duplicate,
    }
}

/// Contacts entries per unit of work between the reading, checking and importing threads.
const IMPORT_BATCH: usize = 256;

type EntryBatch = (u64, Vec<Result<ContactEntry, campaign::Error>>);

/// [`recipients_except_final`], spread over threads: one reads the contacts file (the CSV
/// reader finds invalid and duplicate rows), several render each valid row to check it, and
/// the caller's thread imports the rows, in file order, while the next ones are being checked.
/// Rendering is most of an import's cost; this way it uses every core and overlaps with the
/// ledger writes. Memory stays bounded (a few batches per thread in flight).
pub struct Validated {
    results: std::sync::mpsc::Receiver<(u64, Vec<Checked>)>,
    /// Batches that arrived before their turn.
    early: BTreeMap<u64, Vec<Checked>>,
    next: u64,
    batch: std::vec::IntoIter<Checked>,
    stats: ContactStats,
    /// Set once an error was handed out: the import stops there.
    failed: bool,
    /// How many batches the reader sent, set when it reached the end of the file: a stream that
    /// ends before that many arrived lost one (a thread died), which must not pass for the end.
    total: Arc<std::sync::OnceLock<u64>>,
    path: PathBuf,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Validated {
    /// Starts reading and checking `campaign`'s contacts (see [`recipients_except_final`]).
    ///
    /// # Errors
    /// When the contacts file cannot be opened, or no thread can be started.
    pub fn start(
        campaign: Arc<Campaign>,
        final_addresses: HashSet<String>,
        shard: Option<Shard>,
    ) -> Result<Validated, campaign::Error> {
        let contacts = campaign.contacts()?;
        let path = campaign.config().contacts.path.clone();
        let spawn_error = |source| campaign::Error::Read {
            path: path.clone(),
            source,
        };
        let checkers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, 4);
        let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<EntryBatch>(2 * checkers);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(2 * checkers);
        let mut threads = Vec::with_capacity(checkers + 1);
        // `Contacts` borrows the campaign; the reader thread owns its own Arc.
        drop(contacts);
        let total = Arc::new(std::sync::OnceLock::new());
        let reader = {
            let campaign = campaign.clone();
            let total = total.clone();
            std::thread::Builder::new()
                .name("contacts-read".into())
                .spawn(move || {
                    let contacts = match campaign.contacts() {
                        Ok(contacts) => contacts,
                        Err(e) => {
                            let _ = total.set(1);
                            let _ = work_tx.send((0, vec![Err(e)]));
                            return;
                        }
                    };
                    let mut seq = 0;
                    let mut batch = Vec::with_capacity(IMPORT_BATCH);
                    for entry in contacts {
                        let failed = entry.is_err();
                        batch.push(entry);
                        if failed || batch.len() == IMPORT_BATCH {
                            let full =
                                std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH));
                            if failed {
                                let _ = total.set(seq + 1);
                            }
                            // After an error, or once the import stopped, nobody wants more.
                            if work_tx.send((seq, full)).is_err() || failed {
                                return;
                            }
                            seq += 1;
                        }
                    }
                    if !batch.is_empty() {
                        let _ = total.set(seq + 1);
                        let _ = work_tx.send((seq, batch));
                    } else {
                        let _ = total.set(seq);
                    }
                })
                .map_err(spawn_error)?
        };
        threads.push(reader);
        let work_rx = Arc::new(std::sync::Mutex::new(work_rx));
        let final_addresses = Arc::new(final_addresses);
        for i in 0..checkers {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            let campaign = campaign.clone();
            let final_addresses = final_addresses.clone();
            let checker = std::thread::Builder::new()
                .name(format!("contacts-check-{i}"))
                .spawn(move || {
                    let name = campaign.name().to_owned();
                    let first_body = std::cell::Cell::new(true);
                    loop {
                        let next = work_rx
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        let Ok((seq, entries)) = next else { return };
                        let checked = entries
                            .into_iter()
                            .map(|e| {
                                check_entry(
                                    &campaign,
                                    &name,
                                    &final_addresses,
                                    shard,
                                    &first_body,
                                    e,
                                )
                            })
                            .collect();
                        if done_tx.send((seq, checked)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(spawn_error)?;
            threads.push(checker);
        }
        Ok(Validated {
            results: done_rx,
            early: BTreeMap::new(),
            next: 0,
            batch: Vec::new().into_iter(),
            stats: ContactStats::default(),
            failed: false,
            total,
            path,
            threads,
        })
    }

    /// What the checks found besides the valid rows (of the rows handed out so far: all of them
    /// once the import consumed the iterator).
    pub fn finish(self) -> ContactStats {
        let Validated {
            results,
            threads,
            stats,
            ..
        } = self;
        // Dropping the receiver stops the threads at their next send.
        drop(results);
        for thread in threads {
            let _ = thread.join();
        }
        stats
    }
}

impl Iterator for &mut Validated {
    type Item = Result<NewRecipient, campaign::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            for checked in self.batch.by_ref() {
                if let Some(item) = self.stats.take(checked) {
                    self.failed = item.is_err();
                    return Some(item);
                }
            }
            // The next batch in file order, waiting for it if a checker still has it.
            let batch = loop {
                if let Some(batch) = self.early.remove(&self.next) {
                    break batch;
                }
                match self.results.recv() {
                    Ok((seq, batch)) => {
                        self.early.insert(seq, batch);
                    }
                    // Every thread is gone: the end of the file, or a thread that died.
                    Err(_) if self.total.get() == Some(&self.next) => return None,
                    Err(_) => {
                        self.failed = true;
                        return Some(Err(campaign::Error::Read {
                            path: self.path.clone(),
                            source: std::io::Error::other(
                                "checking the contacts stopped before the end of the file \
                                 (a worker thread failed); nothing was imported. This is a \
                                 bug in mailroom: please report it, with the contacts file \
                                 if you can",
                            ),
                        }));
                    }
                }
            };
            self.next += 1;
            self.batch = batch.into_iter();
        }
    }
}

/// Renders ledger rows with the campaign's templates.
pub struct CampaignRender(pub Arc<Campaign>);

impl Render for CampaignRender {
    fn render(&self, row: &DueRow) -> Result<Outgoing, String> {
        let contact = Self::contact(row)?;
        let rendered = self.0.render(&contact).map_err(|e| e.to_string())?;
        Ok(Outgoing {
            envelope_from: rendered.envelope_from,
            envelope_to: rendered.envelope_to,
            message_id: rendered.message_id,
            bytes: rendered.bytes,
        })
    }

    /// Seeds get the message as it is (no subject prefix), addressed to them.
    fn render_copy(&self, row: &DueRow, to: &str, id: &str) -> Option<Result<Outgoing, String>> {
        let copy = campaign::Copy {
            to,
            subject_prefix: "",
            id,
        };
        Some(
            Self::contact(row)
                .and_then(|contact| {
                    self.0
                        .render_copy(&contact, &copy, std::time::SystemTime::now())
                        .map_err(|e| e.to_string())
                })
                .map(|r| Outgoing {
                    envelope_from: r.envelope_from,
                    envelope_to: r.envelope_to,
                    message_id: r.message_id,
                    bytes: r.bytes,
                }),
        )
    }
}

impl CampaignRender {
    fn contact(row: &DueRow) -> Result<Contact, String> {
        let fields = super::fields::decode(&row.fields, &row.email, row.name.as_deref())?;
        Ok(Contact {
            line: row.line,
            email: row.email.clone(),
            name: row.name.clone(),
            fields,
        })
    }
}

/// Transport settings from `[smtp]`, with the password read from the environment variable named
/// by `password_env` or from `password_file` (first line, trailing newline removed). With
/// `[[relay]]` tables instead, the first relay's (test sends and seed copies go through it).
///
/// # Errors
/// When no host is set, or the password is configured but cannot be read.
pub fn settings(campaign: &Campaign) -> Result<Settings, Error> {
    let config = campaign.config();
    match config.relay.first() {
        Some(first) => {
            settings_of(first, campaign.config_path()).map_err(|e| e.in_table(&relay_table(first)))
        }
        None => settings_of(&config.smtp, campaign.config_path()),
    }
}

/// How errors name a `[[relay]]` table: `[[relay]] "backup"`.
fn relay_table(relay: &campaign::SmtpConfig) -> String {
    format!(
        "[[relay]] {:?}",
        relay.name.as_deref().unwrap_or_default().trim()
    )
}

/// One relay table's transport settings (`[smtp]` or a `[[relay]]`), secrets read.
fn settings_of(smtp: &campaign::SmtpConfig, config: &std::path::Path) -> Result<Settings, Error> {
    let config = config.to_owned();
    if smtp.host.trim().is_empty() {
        return Err(Error::NoHost {
            config,
            table: SMTP_TABLE.to_owned(),
        });
    }
    let password = super::secrets::password(smtp, &config)?;
    let oauth = super::secrets::tokens(smtp, &config, crate::oauth::Purpose::Smtp)?;
    Ok(Settings {
        host: smtp.host.clone(),
        port: smtp.port,
        security: smtp.security,
        username: smtp.username.clone(),
        password,
        oauth,
        ca_file: smtp.ca_file.clone(),
        hello_name: smtp.hello_name.clone(),
        fallback_ports: smtp.fallback_ports.clone(),
        connect_timeout: smtp.connect_timeout,
        command_timeout: smtp.command_timeout,
        data_timeout: smtp.data_timeout,
        messages_per_connection: smtp.messages_per_connection,
    })
}

/// One `[[relay]]` ready to be connected: its transport settings (secrets read) and the keys
/// that make it one relay among several.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub name: String,
    pub weight: u32,
    pub rate: RateOptions,
    pub daily_cap: Option<u64>,
    pub cooloff: std::time::Duration,
    pub settings: Settings,
}

impl RelaySettings {
    /// The relay with its transport (the host resolved, the CA file loaded).
    ///
    /// # Errors
    /// See [`crate::transport::Transport::new`].
    pub async fn into_spec(self) -> Result<super::RelaySpec, crate::transport::Error> {
        Ok(super::RelaySpec {
            transport: crate::transport::Transport::new(self.settings).await?,
            name: self.name,
            weight: self.weight,
            rate: self.rate,
            daily_cap: self.daily_cap,
            cooloff: self.cooloff,
        })
    }
}

/// The `[[relay]]` tables of the campaign (empty with `[smtp]`), secrets read.
///
/// # Errors
/// When a relay's password is configured but cannot be read.
pub fn relays(campaign: &Campaign) -> Result<Vec<RelaySettings>, Error> {
    campaign
        .config()
        .relay
        .iter()
        .map(|r| {
            Ok(RelaySettings {
                name: r.name.clone().unwrap_or_default().trim().to_owned(),
                weight: r.weight.unwrap_or(1).max(1),
                rate: RateOptions {
                    per_second: r.per_second,
                    per_minute: r.per_minute,
                    per_hour: None,
                    burst: 1,
                    per_domain: BTreeMap::new(),
                    daily_cap: None,
                    warmup: Vec::new(),
                },
                daily_cap: r.daily_cap,
                cooloff: r.cooloff.unwrap_or(super::relays::DEFAULT_COOLOFF),
                settings: settings_of(r, campaign.config_path())
                    .map_err(|e| e.in_table(&relay_table(r)))?,
            })
        })
        .collect()
}

/// The relays of a `send`: the `[[relay]]`s when there are any, else `[smtp]`'s `transport`.
///
/// # Errors
/// See [`RelaySettings::into_spec`].
pub async fn route(
    relays: Vec<RelaySettings>,
    transport: std::sync::Arc<crate::transport::Transport>,
) -> Result<super::Relays, crate::transport::Error> {
    let mut specs = Vec::with_capacity(relays.len());
    for relay in relays {
        specs.push(relay.into_spec().await?);
    }
    let mut specs = specs.into_iter();
    Ok(match specs.next() {
        Some(first) => super::Relays::several(first, specs.collect()),
        None => transport.into(),
    })
}

/// The token source of `bounces import --imap-auth xoauth2`: the `[smtp]` OAuth2 settings,
/// asking for IMAP's scope (a token command sees `MAILROOM_OAUTH_PURPOSE=imap`).
///
/// # Errors
/// When `[smtp]` is not set up for XOAUTH2, or a secret it names cannot be read.
pub fn imap_tokens(campaign: &Campaign) -> Result<Arc<crate::oauth::Tokens>, Error> {
    let config = campaign.config_path().to_owned();
    super::secrets::tokens(
        &campaign.config().smtp,
        &config,
        crate::oauth::Purpose::Imap,
    )?
    .ok_or(Error::NoOAuth { config })
}

/// Pipeline options from `[smtp] connections`, `[rate]` and `[retry]`.
pub fn options(campaign: &Campaign) -> Options {
    let config = campaign.config();
    let rate = &config.rate;
    let retry = &config.retry;
    // With several relays every relay's connections work for the run (a worker holds a session
    // to each relay it uses), and the smallest message size limit holds for all of them.
    let connections: usize = config.relay_tables().iter().map(|r| r.connections).sum();
    let max_message_size = config.max_message_size();
    Options {
        connections: connections.max(1),
        rate: RateOptions {
            per_second: rate.per_second,
            per_minute: rate.per_minute,
            per_hour: rate.per_hour,
            burst: rate.burst,
            per_domain: rate.per_domain.clone(),
            daily_cap: rate.daily_cap,
            warmup: rate.warmup.clone(),
        },
        retry: RetryOptions {
            backoff: retry.backoff.clone(),
            max_attempts: retry.max_attempts,
            max_age: retry.max_age,
        },
        max_message_size,
        window: campaign.window(),
        timezone_column: config.contacts.timezone_column.clone(),
        from_domain: Some(campaign.from_domain().to_owned()),
        seeds: campaign.seeds().to_vec(),
        ..Options::default()
    }
}
