//! A campaign folder: `campaign.toml`, the contacts CSV, the templates and `partials/`.
//! `Campaign::load` validates everything that can be checked without reading the rows (config,
//! file existence, CSV header, template syntax, partials); `contacts` streams row verdicts and
//! `render` builds one message. This module does no network I/O and never touches the ledger.
//!
//! Errors name the file, the line (and column where known) and, after a blank line, the fix.

mod address;
mod attach;
mod charset;
mod compiled;
pub mod config;
mod contacts;
mod deliverability;
mod encoding;
mod html_text;
mod message;
pub mod template;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use lettre::message::Mailbox;
use lettre::message::header::HeaderName;

pub use attach::{AttachmentFile, MAX_ATTACHMENT};
pub use charset::utf8_text;
pub use config::{
    BouncesSection, CampaignSection, Config, ContactsSection, DkimSection, DnsSection,
    GuardSection, ProvidersSection, RateConfig, RetryConfig, ScheduleSection, Security,
    SeedsSection, SmtpConfig, StoreSection, TestSection, UnsubscribeSection,
};
pub use contacts::{Contact, ContactEntry, Contacts, column_list};
pub use template::{BUILTIN_VARIABLES, MissingVariable};

use contacts::Header;
pub use message::Copy;
use message::{Body, Fixed, Names, UnsubscribeNames};
use template::{Source, Templates};

/// Everything that can go wrong loading or rendering a campaign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: no campaign.toml in this folder\n\nRun `mailroom init {}` to create a campaign there, or pass the path of the campaign's toml file.",
        path.display(), path.display()
    )]
    NoConfig { path: PathBuf },
    #[error(
        "{}: {what}, not a campaign.toml\n\nPass the campaign's folder (the one holding \
         campaign.toml), or its campaign.toml.",
        path.display()
    )]
    NotConfig { path: PathBuf, what: &'static str },
    #[error("{}{}: {message}\n\n{fix}", path.display(), loc(*line, *column))]
    Toml {
        path: PathBuf,
        line: Option<u64>,
        column: Option<u64>,
        message: String,
        fix: String,
    },
    #[error("{}{}: {key}: {message}\n\n{fix}", path.display(), loc(*line, None))]
    Config {
        path: PathBuf,
        line: Option<u64>,
        key: String,
        message: String,
        fix: String,
    },
    #[error("{}{}: {message}\n\n{fix}", path.display(), loc(*line, None))]
    Csv {
        path: PathBuf,
        line: Option<u64>,
        message: String,
        fix: String,
    },
    #[error(
        "{}{}: template `{template}` does not compile: {message}\n\nFix the Handlebars syntax at that position.",
        path.display(), loc(*line, *column)
    )]
    TemplateSyntax {
        template: String,
        path: PathBuf,
        line: Option<u64>,
        column: Option<u64>,
        message: String,
    },
    #[error(
        "{}{}: template `{template}` includes the partial `{partial}`, which does not exist\n\nCreate partials/{partial}.hbs beside campaign.toml, or fix the name after `{{{{>`.",
        path.display(), loc(*line, None)
    )]
    MissingPartial {
        template: String,
        path: PathBuf,
        line: Option<u64>,
        partial: String,
    },
    /// Partials that include each other in a circle: rendering would never end.
    #[error(
        "{}{}: template `{template}` includes partials that include each other in a circle ({cycle}): rendering it would never end\n\nRemove one of these `{{{{> ...}}}}` includes so that no partial includes itself, directly or through another.",
        path.display(), loc(*line, None)
    )]
    PartialCycle {
        template: String,
        path: PathBuf,
        line: Option<u64>,
        /// The partials in order, the first repeated at the end: `a → b → a`.
        cycle: String,
    },
    /// One row cannot become a message; `reason` starts with "line N:".
    #[error("{}: {reason}", path.display())]
    Row {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    /// A `[dkim]` key cannot be used (`path` is the key file), or signing failed. The message
    /// is the key error's own, which already names the file and the fix.
    #[error("{error}")]
    Dkim {
        path: PathBuf,
        /// Not `#[source]`: its message is this error's whole message, printed once.
        error: crate::dkim::Error,
    },
}

fn loc(line: Option<u64>, column: Option<u64>) -> String {
    let mut s = String::new();
    if let Some(l) = line {
        let _ = write!(s, ":{l}");
        if let Some(c) = column {
            let _ = write!(s, ":{c}");
        }
    }
    s
}

/// What the file at `path` is when its name says it is not a TOML file: the campaign's other
/// files (a contacts file, a template) are the usual mistake, and parsed as TOML they gave an
/// error about TOML syntax at their first line. `None` for `.toml` and for a name without an
/// extension, which may hold TOML.
fn not_toml(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
    Some(match ext.as_str() {
        "toml" => return None,
        "csv" | "tsv" | "txt" | "xlsx" | "xls" => "this looks like a contacts file",
        "hbs" | "handlebars" | "html" | "htm" | "md" => "this looks like a template",
        "db" | "sqlite" => "this looks like a ledger",
        _ => "this is not a .toml file",
    })
}

impl Error {
    /// The file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            Error::Read { path, .. }
            | Error::NoConfig { path }
            | Error::NotConfig { path, .. }
            | Error::Toml { path, .. }
            | Error::Config { path, .. }
            | Error::Csv { path, .. }
            | Error::TemplateSyntax { path, .. }
            | Error::MissingPartial { path, .. }
            | Error::PartialCycle { path, .. }
            | Error::Row { path, .. }
            | Error::Dkim { path, .. } => path,
        }
    }

    /// The 1-based line in [`Error::file`], where known.
    pub fn line(&self) -> Option<u64> {
        match self {
            Error::Read { .. }
            | Error::NoConfig { .. }
            | Error::NotConfig { .. }
            | Error::Dkim { .. } => None,
            Error::Toml { line, .. }
            | Error::Config { line, .. }
            | Error::Csv { line, .. }
            | Error::TemplateSyntax { line, .. }
            | Error::MissingPartial { line, .. }
            | Error::PartialCycle { line, .. } => *line,
            Error::Row { line, .. } => Some(*line),
        }
    }

    /// True when the error is about one contact row only (the rest of the file is usable).
    pub fn is_row(&self) -> bool {
        matches!(self, Error::Row { .. })
    }

    /// For a row error, the reason without the file name (starts with "line N:").
    pub fn row_reason(&self) -> Option<&str> {
        match self {
            Error::Row { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// One message, ready for the envelope and DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// MAIL FROM: `return_path` with `{token}` replaced, or the From address.
    pub envelope_from: String,
    /// RCPT TO: the normalised contact address.
    pub envelope_to: String,
    /// Without angle brackets; stable per campaign and recipient across runs.
    pub message_id: String,
    /// VERP token, [`recipient_token`] of the campaign name and address.
    pub token: String,
    /// The complete message: CRLF line ends, no line over 998 octets.
    pub bytes: Vec<u8>,
}

/// SHA-256 of campaign name and normalised address: the one digest behind a recipient's token
/// and its shard.
fn recipient_digest(campaign_name: &str, email: &str) -> ring::digest::Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(campaign_name.as_bytes());
    // The separator keeps ("ab", "c@x") and ("a", "bc@x") apart.
    ctx.update(b"\0");
    ctx.update(email.as_bytes());
    ctx.finish()
}

/// Deterministic per campaign + normalised email: 16 chars of `[a-z0-9]` from SHA-256.
pub fn recipient_token(campaign_name: &str, email: &str) -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let digest = recipient_digest(campaign_name, email);
    digest
        .as_ref()
        .iter()
        .take(16)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The recipient token in `message_id` (with or without angle brackets) when it is the
/// Message-ID of a message of `campaign_name` ([`Campaign::message_id`]), whatever From domain it
/// carried; `None` for any other Message-ID.
pub fn message_id_token<'a>(campaign_name: &str, message_id: &'a str) -> Option<&'a str> {
    let local = message_id
        .trim()
        .trim_matches(['<', '>'])
        .rsplit_once('@')?
        .0;
    let (token, hash) = local.split_once('.')?;
    let ours = recipient_token(campaign_name, "");
    let is_token = token.len() == 16
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (is_token && ours.get(..8) == Some(hash)).then_some(token)
}

/// A recipient's bucket for sharding (`model::Shard::contains`): bytes of the same digest as
/// its token, so every host computes the same split from the same contacts file.
pub fn recipient_bucket(campaign_name: &str, email: &str) -> u64 {
    let digest = recipient_digest(campaign_name, email);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[16..24]);
    u64::from_be_bytes(bytes)
}

/// The List-Id used when `[campaign] list_id` is not set: the From address turned into a
/// dot-atom under its own domain (`news@bakery.example` → `<news.bakery.example>`), so every
/// campaign from one sender address is one list (RFC 2919 §2 wants the id stable).
fn default_list_id(from_addr: &str) -> String {
    let (local, domain) = from_addr.rsplit_once('@').unwrap_or(("list", from_addr));
    let label: String = local
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let label = label.trim_matches('-');
    let label = if label.is_empty() { "list" } else { label };
    format!("<{label}.{}>", domain.to_ascii_lowercase())
}

/// The campaign name as one Feedback-ID field (letters, digits, `-_.`).
fn feedback_field(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Normalises an address the way contacts are normalised (lower-cased, IDN domain as
/// punycode); `Err` holds the reason it is invalid.
pub fn normalize_address(raw: &str) -> Result<String, String> {
    address::normalize(raw)
}

/// A loaded, validated campaign. Cheap to share by reference across threads.
pub struct Campaign {
    root: PathBuf,
    config_path: PathBuf,
    config: Config,
    header: Header,
    templates: Templates,
    names: Names,
    fixed: Fixed,
    from: Mailbox,
    from_domain: String,
    /// First 8 chars of the campaign's own token: namespaces Message-IDs per campaign.
    campaign_hash: String,
    /// A body template can fail for one row and not another (see `bodies_vary_by_row`).
    bodies_vary: bool,
    /// `[dkim]`'s keys, loaded; `None` without `[dkim]` or for [`Campaign::load_without_keys`].
    signer: Option<crate::dkim::Signer>,
    /// `[campaign] attachments`, each with its encoded MIME part (built once, shared).
    attachments: Vec<(AttachmentFile, Arc<[u8]>)>,
    /// Encoded parts of `[contacts] attachment_column` files, shared while they fit.
    row_parts: attach::RowParts,
    /// `[seeds]`: addresses and file together, normalised, each once.
    seeds: Vec<String>,
}

impl std::fmt::Debug for Campaign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaign")
            .field("config_path", &self.config_path)
            .field("name", &self.config.campaign.name)
            .finish_non_exhaustive()
    }
}

fn mailbox(name: Option<String>, addr: &str, path: &Path, key: &str) -> Result<Mailbox, Error> {
    let a: lettre::Address = addr.parse().map_err(|e| Error::Config {
        path: path.to_owned(),
        line: None,
        key: key.to_owned(),
        message: format!("{addr:?} is not a valid address: {e}"),
        fix: "Use a plain address such as news@example.com.".into(),
    })?;
    Ok(Mailbox::new(name, a))
}

/// `[seeds] addresses` and the addresses of `[seeds] file` (one a line, `#` comments), each
/// checked: a bad one is an error at its line.
fn read_seeds(config: &Config, config_path: &Path, text: &str) -> Result<Vec<String>, Error> {
    let mut seeds: Vec<String> = Vec::new();
    let mut add = |a: String| {
        if !seeds.contains(&a) {
            seeds.push(a);
        }
    };
    for a in &config.seeds.addresses {
        // Validated with the config; normalising again cannot fail.
        add(address::normalize(a).unwrap_or_else(|_| a.clone()));
    }
    if let Some(file) = &config.seeds.file {
        if let Some(problem) = template::file_problem(file) {
            return Err(Error::Config {
                path: config_path.to_owned(),
                line: config::key_line(text, "seeds", "file"),
                key: "seeds.file".into(),
                message: format!("{} {problem}", file.display()),
                fix: "Name a text file with one address a line, relative to the folder of campaign.toml.".into(),
            });
        }
        let list = template::read(file)?;
        for (i, line) in list.lines().enumerate() {
            let a = line.split('#').next().unwrap_or("").trim();
            if a.is_empty() {
                continue;
            }
            let a = address::normalize(a).map_err(|reason| Error::Csv {
                path: file.clone(),
                line: Some(i as u64 + 1),
                message: format!("{a:?} is not a valid seed address: {reason}"),
                fix: "Put one address per line (a # starts a comment).".into(),
            })?;
            add(a);
        }
    }
    Ok(seeds)
}

impl Campaign {
    /// Loads `path` (a folder holding campaign.toml, or the toml itself): parses and validates
    /// the config, checks that every named file exists, reads the CSV header, compiles every
    /// template in strict mode and loads the `[dkim]` keys (refusing one others can read).
    /// Does not read contact rows.
    pub fn load(path: &Path) -> Result<Campaign, Error> {
        let mut campaign = Campaign::load_without_keys(path)?;
        if let Some(dkim) = &campaign.config.dkim {
            let mut specs = Vec::new();
            for (domain, selector, file) in dkim.signatures() {
                let key = crate::dkim::Key::load(file).map_err(|error| Error::Dkim {
                    path: file.to_owned(),
                    error,
                })?;
                specs.push(crate::dkim::SignatureSpec {
                    domain: domain.to_owned(),
                    selector: selector.to_owned(),
                    key,
                });
            }
            campaign.signer = Some(crate::dkim::Signer::new(specs, &dkim.signed_headers()));
        }
        Ok(campaign)
    }

    /// [`Campaign::load`] without reading the `[dkim]` keys: for commands that never build a
    /// message (reports, bounce imports), so a key kept elsewhere does not stop them. Messages
    /// rendered from such a campaign are not signed.
    pub fn load_without_keys(path: &Path) -> Result<Campaign, Error> {
        let config_path = if path.is_dir() {
            let p = path.join("campaign.toml");
            if !p.exists() {
                return Err(Error::NoConfig {
                    path: path.to_owned(),
                });
            }
            p
        } else {
            if let Some(what) = not_toml(path) {
                return Err(Error::NotConfig {
                    path: path.to_owned(),
                    what,
                });
            }
            path.to_owned()
        };
        let config_path = std::path::absolute(&config_path).unwrap_or(config_path);
        let root = config_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        let text = template::read(&config_path)?;
        let config = Config::parse(&text, &config_path, &root)?;

        let exists = |p: &Path, section: &str, key: &str| -> Result<(), Error> {
            let Some(problem) = template::file_problem(p) else {
                return Ok(());
            };
            Err(Error::Config {
                path: config_path.clone(),
                line: config::key_line(&text, section, key),
                key: format!("{section}.{key}"),
                message: format!("{} {problem}", p.display()),
                fix: "Name a regular file, or fix the path (relative to the folder of campaign.toml)."
                    .into(),
            })
        };
        let c = &config.campaign;
        for (p, key) in [
            (&c.text, "text"),
            (&c.html, "html"),
            (&c.markdown, "markdown"),
        ] {
            if let Some(p) = p {
                exists(p, "campaign", key)?;
            }
        }
        exists(&config.contacts.path, "contacts", "path")?;

        let header = contacts::read_header(
            &config.contacts.path,
            config.contacts.delimiter,
            contacts::Named {
                email: &config.contacts.email_column,
                name: config.contacts.name_column.as_deref(),
                attachment: config.contacts.attachment_column.as_deref(),
                timezone: config.contacts.timezone_column.as_deref(),
            },
            config.contacts.charset(),
        )?;
        let seeds = read_seeds(&config, &config_path, &text)?;
        let mut attachments = Vec::with_capacity(c.attachments.len());
        for written in &c.attachments {
            let attachment_error = |reason: String| {
                Error::Config {
                path: config_path.clone(),
                line: config::key_line(&text, "campaign", "attachments"),
                key: "campaign.attachments".into(),
                message: format!("attachment `{written}`: {reason}"),
                fix: "Name files inside the campaign folder, relative to it, e.g. attachments = [\"files/brochure.pdf\"].".into(),
            }
            };
            let file = attach::confine(&root, written).map_err(attachment_error)?;
            // Encoded once here; every message shares the bytes.
            let part: Arc<[u8]> = attach::encode_part(&file)
                .map_err(|e| attachment_error(format!("cannot be read: {e}")))?
                .into();
            attachments.push((file, part));
        }

        let (from_name, from_addr) =
            address::parse_mailbox(&c.from).map_err(|reason| Error::Config {
                path: config_path.clone(),
                line: config::key_line(&text, "campaign", "from"),
                key: "campaign.from".into(),
                message: reason,
                fix: "Use from = \"Your Name <you@example.com>\".".into(),
            })?;
        let from = mailbox(from_name, &from_addr, &config_path, "campaign.from")?;
        let from_domain = from_addr
            .rsplit_once('@')
            .map_or_else(String::new, |(_, d)| d.to_owned());
        let reply_to = match &c.reply_to {
            Some(r) => {
                let (n, a) = address::parse_mailbox(r).map_err(|reason| Error::Config {
                    path: config_path.clone(),
                    line: config::key_line(&text, "campaign", "reply_to"),
                    key: "campaign.reply_to".into(),
                    message: reason,
                    fix: "Use reply_to = \"Name <replies@example.com>\".".into(),
                })?;
                Some(mailbox(n, &a, &config_path, "campaign.reply_to")?)
            }
            None => None,
        };

        let mut templates = Templates::new();
        templates.add_partials(&root.join("partials"))?;
        let in_toml = |name: &str, section: &str, key: &str| Source {
            name: name.to_owned(),
            file: config_path.clone(),
            line: config::key_line(&text, section, key),
        };
        templates.add(
            in_toml("campaign.subject", "campaign", "subject"),
            &c.subject,
        )?;
        let mut headers = Vec::new();
        for (h, v) in &c.headers {
            let name = format!("campaign.headers.{h}");
            templates.add(in_toml(&name, "campaign.headers", h), v)?;
            let hn = HeaderName::new_from_ascii(h.clone()).map_err(|_| Error::Config {
                path: config_path.clone(),
                line: config::key_line(&text, "campaign.headers", h),
                key: format!("campaign.headers.{h}"),
                message: format!("{h:?} is not a valid header name"),
                fix: "Use printable ASCII without spaces or colons, at most 76 characters.".into(),
            })?;
            headers.push((hn, name));
        }
        let unsubscribe = match &config.unsubscribe {
            Some(u) => {
                templates.add(in_toml("unsubscribe.url", "unsubscribe", "url"), &u.url)?;
                let mailto = match &u.mailto {
                    Some(m) => {
                        templates.add(in_toml("unsubscribe.mailto", "unsubscribe", "mailto"), m)?;
                        Some("unsubscribe.mailto".to_owned())
                    }
                    None => None,
                };
                Some(UnsubscribeNames {
                    url: "unsubscribe.url".into(),
                    mailto,
                })
            }
            None => None,
        };
        let mut add_file = |p: &Option<PathBuf>| -> Result<Option<String>, Error> {
            let Some(p) = p else { return Ok(None) };
            let name = p
                .strip_prefix(&root)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned();
            let source = template::read(p)?;
            templates.add(
                Source {
                    name: name.clone(),
                    file: p.clone(),
                    line: None,
                },
                &source,
            )?;
            Ok(Some(name))
        };
        let body = match add_file(&c.markdown)? {
            Some(m) => Body::Markdown(m),
            None => Body::Parts {
                text: add_file(&c.text)?,
                html: add_file(&c.html)?,
            },
        };
        templates.check_partials()?;
        templates.compile();
        let body_names: Vec<&str> = match &body {
            Body::Markdown(m) => vec![m.as_str()],
            Body::Parts { text, html } => [text, html]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
        };
        let bodies_vary = templates.varies_by_row(&body_names);
        let mut header_templates = vec!["campaign.subject".to_owned()];
        header_templates.extend(headers.iter().map(|(_, t)| t.clone()));
        if let Some(u) = &unsubscribe {
            header_templates.push(u.url.clone());
            header_templates.extend(u.mailto.clone());
        }
        let mentions = header_templates
            .into_iter()
            .map(|t| {
                let used = templates.mentioned(vec![t.clone()]);
                (t, used)
            })
            .collect();

        let campaign_hash = recipient_token(&c.name, "").chars().take(8).collect();
        let list_id = c
            .list_id
            .clone()
            .unwrap_or_else(|| default_list_id(&from_addr));
        let feedback_id = c
            .feedback_id
            .as_ref()
            .map(|f| f.replace("{campaign}", &feedback_field(&c.name)));
        let fixed = Fixed::new(
            &from,
            reply_to.as_ref(),
            &c.name,
            &list_id,
            feedback_id.as_deref(),
        );
        Ok(Campaign {
            fixed,
            names: Names {
                mentions,
                subject: "campaign.subject".into(),
                headers,
                unsubscribe,
                body,
            },
            root,
            config_path,
            header,
            templates,
            from,
            from_domain,
            campaign_hash,
            bodies_vary,
            attachments,
            row_parts: attach::RowParts::default(),
            seeds,
            config,
            signer: None,
        })
    }

    /// The DKIM signer of `[dkim]`, when the keys were loaded.
    pub fn signer(&self) -> Option<&crate::dkim::Signer> {
        self.signer.as_ref()
    }

    /// The From address's domain (lower-cased, punycode).
    pub fn from_domain(&self) -> &str {
        &self.from_domain
    }

    /// The envelope sender's domain: `[bounces] return_path`'s, or the From domain.
    pub fn envelope_domain(&self) -> String {
        self.config
            .bounces
            .return_path
            .as_deref()
            .and_then(|rp| rp.rsplit_once('@'))
            .map_or_else(|| self.from_domain.clone(), |(_, d)| d.to_ascii_lowercase())
    }

    /// The campaign's stable name (`[campaign] name`).
    pub fn name(&self) -> &str {
        &self.config.campaign.name
    }

    /// The validated config; every path in it is absolute.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The folder of campaign.toml.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The campaign.toml path.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The Message-ID (without angle brackets) of the message for the recipient with `token`:
    /// `<token>.<campaign hash>@<From domain>`, stable across renders and derived, never stored:
    /// [`message_id_token`] reads the token back out of a bounce that quotes it.
    pub fn message_id(&self, token: &str) -> String {
        format!("{token}.{}@{}", self.campaign_hash, self.from_domain)
    }

    /// The CSV header's column names, in file order.
    pub fn columns(&self) -> &[String] {
        &self.header.columns
    }

    /// The normalised From address (without display name).
    pub fn from_address(&self) -> String {
        self.from.email.to_string()
    }

    /// Streams the CSV; yields every row's verdict in file order (see [`ContactEntry`]).
    pub fn contacts(&self) -> Result<Contacts<'_>, Error> {
        Contacts::open(
            &self.config.contacts.path,
            self.config.contacts.delimiter,
            &self.header,
        )
    }

    /// Renders one complete RFC 5322 message (CRLF, ≤998 octets per line), dated now.
    pub fn render(&self, contact: &Contact) -> Result<Rendered, Error> {
        self.render_at(contact, SystemTime::now())
    }

    /// Variables the templates require that neither the CSV header nor the built-in
    /// variables ([`BUILTIN_VARIABLES`]) provide: every row would fail on them.
    pub fn missing_variables(&self) -> Vec<MissingVariable> {
        let known: HashSet<&str> = self
            .header
            .columns
            .iter()
            .map(String::as_str)
            .chain(BUILTIN_VARIABLES.iter().copied())
            .collect();
        self.templates.missing_variables(&known)
    }

    /// True if a body template or a partial it includes refers to `variable` anywhere
    /// (used to warn when no body shows `{{unsubscribe_url}}`).
    pub fn body_mentions(&self, variable: &str) -> bool {
        self.templates.body_mentions(variable)
    }

    /// Whether the body shows an unsubscribe link: a body template (or a partial) uses
    /// `{{unsubscribe_url}}`, or its text holds a literal link mentioning "unsubscribe"
    /// (Gmail asks for one in the body besides the List-Unsubscribe header).
    pub fn has_visible_unsubscribe_link(&self) -> bool {
        if self.body_mentions("unsubscribe_url") {
            return true;
        }
        let c = &self.config.campaign;
        let mut files: Vec<PathBuf> = [&c.text, &c.html, &c.markdown]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if let Ok(dir) = std::fs::read_dir(self.root.join("partials")) {
            files.extend(dir.filter_map(Result::ok).map(|e| e.path()));
        }
        files.iter().any(|f| {
            template::read(f).is_ok_and(|text| {
                let lower = text.to_ascii_lowercase();
                lower.contains("unsubscribe")
                    && (lower.contains("http") || lower.contains("mailto:"))
            })
        })
    }

    /// Names of every compiled template and partial.
    pub fn template_names(&self) -> Vec<String> {
        self.templates.names()
    }

    /// The `[schedule]` send window, if any (validated at load).
    pub fn window(&self) -> Option<crate::schedule::Window> {
        self.config.schedule.as_ref().and_then(|s| s.window().ok())
    }

    /// The `[seeds]` addresses (from `addresses` and `file`), normalised, each once.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// `[campaign] attachments` with the size of each encoded MIME part (what each adds to
    /// every message).
    pub fn attachments(&self) -> Vec<(AttachmentFile, usize)> {
        self.attachments
            .iter()
            .map(|(f, part)| (f.clone(), part.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_is_stable_and_16_lowercase_alnum() {
        let a = recipient_token("spring", "ann@example.com");
        assert_eq!(a, recipient_token("spring", "ann@example.com"));
        assert_eq!(a.len(), 16);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_ne!(a, recipient_token("autumn", "ann@example.com"));
        assert_ne!(a, recipient_token("spring", "bob@example.com"));
        assert_ne!(
            recipient_token("ab", "c@x.example"),
            recipient_token("a", "bc@x.example")
        );
    }

    #[test]
    fn a_message_id_gives_its_token_back_only_for_its_campaign() {
        let token = recipient_token("spring", "ann@example.com");
        let hash = &recipient_token("spring", "")[..8];
        let id = format!("{token}.{hash}@news.example");
        assert_eq!(message_id_token("spring", &id), Some(token.as_str()));
        // Another From domain (the config changed between runs) still names the same send.
        let moved = format!("<{token}.{hash}@other.example>");
        assert_eq!(message_id_token("spring", &moved), Some(token.as_str()));
        for foreign in [
            format!("{token}.{hash}"),
            format!("{token}@news.example"),
            format!("{token}.zzzzzzzz@news.example"),
            format!("{}.{hash}@news.example", &token[..15]),
            format!("{}.{hash}@news.example", token.to_uppercase()),
            "m-ann@news.example".to_owned(),
        ] {
            assert_eq!(message_id_token("spring", &foreign), None, "{foreign}");
        }
        assert_eq!(message_id_token("autumn", &id), None);
    }

    #[test]
    fn default_list_id_is_a_dot_atom_under_the_from_domain() {
        assert_eq!(
            default_list_id("news@Bakery.example"),
            "<news.bakery.example>"
        );
        assert_eq!(default_list_id("a.b+c@x.example"), "<a-b-c.x.example>");
        assert_eq!(feedback_field("2026 spring/news"), "2026-spring-news");
    }

    /// Every campaign shipped with the project (the `init` templates, the test fixtures, the
    /// contact-export fixtures) renders every row byte for byte the same whether its templates
    /// run compiled or through Handlebars, and its templates do compile.
    #[test]
    fn compiled_templates_render_every_fixture_row_as_handlebars_does() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut folders = vec![
            root.join("templates"),
            root.join("tests/fixtures/campaigns/base"),
        ];
        for entry in std::fs::read_dir(root.join("tests/fixtures/exports")).unwrap() {
            folders.push(entry.unwrap().path());
        }
        let date = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
        let mut rows = 0;
        for folder in folders {
            let direct = Campaign::load_without_keys(&folder).unwrap();
            assert!(
                direct.templates.is_compiled(&direct.names.subject),
                "{}",
                folder.display()
            );
            let mut handlebars = Campaign::load_without_keys(&folder).unwrap();
            handlebars.templates.forget_programs();
            for entry in direct.contacts().unwrap() {
                let ContactEntry::Valid(contact) = entry.unwrap() else {
                    continue;
                };
                let a = direct.render_unsigned_at(&contact, date);
                let b = handlebars.render_unsigned_at(&contact, date);
                match (a, b) {
                    (Ok(a), Ok(b)) => assert!(
                        a.bytes == b.bytes,
                        "{} line {}:\n{}\n---\n{}",
                        folder.display(),
                        contact.line,
                        String::from_utf8_lossy(&a.bytes),
                        String::from_utf8_lossy(&b.bytes)
                    ),
                    (a, b) => assert_eq!(
                        a.map(|r| r.bytes).map_err(|e| e.to_string()),
                        b.map(|r| r.bytes).map_err(|e| e.to_string())
                    ),
                }
                rows += 1;
            }
        }
        assert!(rows >= 10, "{rows}");
    }

    #[test]
    fn error_location_formats() {
        assert_eq!(loc(Some(3), Some(7)), ":3:7");
        assert_eq!(loc(Some(3), None), ":3");
        assert_eq!(loc(None, Some(7)), "");
    }
}
