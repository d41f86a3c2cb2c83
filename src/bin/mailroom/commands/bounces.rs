//! `mailroom bounces parse FILE...` prints what each bounce, complaint or auto-reply says;
//! `mailroom bounces import CAMPAIGN --maildir|--mbox|--imap` records it in the campaign's ledger.
//! Parsing, matching and the IMAP client live in `mailroom::bounce`; this file wires and prints.

use mailroom::display::one_line;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mailroom::bounce::{self, Report, import, mailbox};

/// Arguments of `mailroom bounces`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the reports (one per recipient) found in bounce/complaint/auto-reply messages.
    Parse(ParseArgs),
    /// Read a bounce mailbox and record what it says in a campaign's ledger.
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
struct ParseArgs {
    /// Message files (RFC 5322, as saved by a mail client or a Maildir); a Maildir folder reads
    /// its new/ and cur/, any other folder every file in it.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// One JSON object per report per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mailbox").required(true).args(["maildir", "mbox", "imap"])))]
struct ImportArgs {
    /// The campaign folder (or its campaign.toml): gives the name, ledger and return path.
    campaign: PathBuf,
    /// A Maildir holding the bounces (new/ and cur/ are read; nothing is moved).
    #[arg(long, value_name = "DIR")]
    maildir: Option<PathBuf>,
    /// An mbox file holding the bounces.
    #[arg(long, value_name = "FILE")]
    mbox: Option<PathBuf>,
    /// IMAP mailbox: imaps://user@host[:993]/INBOX (or imap:// with STARTTLS; plain text only
    /// to a loopback server). The password comes from $MAILROOM_IMAP_PASSWORD.
    #[arg(long, value_name = "URL")]
    imap: Option<String>,
    /// How to log in to IMAP: `password` (LOGIN), or `xoauth2` (AUTHENTICATE XOAUTH2 with a
    /// token from the campaign's [smtp] OAuth2 settings, asked for the IMAP scope).
    #[arg(
        long,
        value_enum,
        value_name = "METHOD",
        default_value = "password",
        requires = "imap"
    )]
    imap_auth: ImapAuth,
    /// Name of the environment variable holding the IMAP password.
    #[arg(long, value_name = "NAME", default_value = "MAILROOM_IMAP_PASSWORD")]
    password_env: String,
    /// Extra CA certificate (PEM) to trust for the IMAP server.
    #[arg(long, value_name = "FILE")]
    imap_ca: Option<PathBuf>,
    /// Use this ledger instead of the campaign's `[store] path`. Repeat it for a campaign sent
    /// in shards: each message is recorded in the ledger that sent it.
    #[arg(long, value_name = "PATH")]
    db: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ImapAuth {
    Password,
    Xoauth2,
}

/// The largest `--imap-ca` file read: a CA bundle is a few hundred kB, and a wrong path such as
/// `/dev/zero` must not be read without end.
const MAX_CA_FILE: u64 = 16 << 20;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Parse(a) => parse(a),
        Command::Import(a) => import_cmd(a),
    }
}

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    file: String,
    recipient: &'a str,
    action: Option<&'static str>,
    status: Option<&'a str>,
    reply_code: Option<u16>,
    kind: &'static str,
    reason: &'static str,
    diagnostic: &'a str,
    remote_mta: Option<&'a str>,
    feedback_type: Option<&'a str>,
    message_id: Option<&'a str>,
    token: Option<&'a str>,
    campaign: Option<&'a str>,
    envelope_id: Option<&'a str>,
    original_recipient: Option<&'a str>,
}

fn json_line<'a>(file: &Path, r: &'a Report) -> JsonReport<'a> {
    JsonReport {
        file: file.display().to_string(),
        recipient: &r.recipient,
        action: r.action.map(|a| a.as_str()),
        status: r.status.as_deref(),
        reply_code: r.reply_code,
        kind: r.kind.as_str(),
        reason: r.reason.as_str(),
        diagnostic: &r.diagnostic,
        remote_mta: r.remote_mta.as_deref(),
        feedback_type: r.feedback_type.as_deref(),
        message_id: r.original.message_id.as_deref(),
        token: r.original.token.as_deref(),
        campaign: r.original.campaign.as_deref(),
        envelope_id: r.original.envelope_id.as_deref(),
        original_recipient: r.original_recipient.as_deref(),
    }
}

/// The message files `paths` name: files as they are, a Maildir's messages, every file of
/// another folder. A folder without any is said on stderr: an empty result is otherwise
/// silence, which reads as "nothing wrong".
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let before = out.len();
            let maildir = match mailbox::maildir_files(p) {
                Ok(files) => {
                    out.extend(files);
                    true
                }
                // A plain folder of saved messages: every file in it, by name.
                Err(mailbox::Error::NotMaildir { .. }) => {
                    let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                        .with_context(|| format!("cannot list {}", p.display()))?
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|f| f.is_file())
                        .collect();
                    files.sort();
                    out.extend(files);
                    false
                }
                Err(e) => return Err(e.into()),
            };
            if out.len() == before {
                errln!(
                    "mailroom: {}: no messages in this folder{}",
                    p.display(),
                    if maildir {
                        " (a Maildir whose new/ and cur/ are empty)"
                    } else {
                        ""
                    }
                );
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    match parse_to_stdout(args) {
        // The reader went away (`| head`): what it read is all it wanted.
        Err(e) if crate::output::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        other => other,
    }
}

fn parse_to_stdout(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let files = expand(&args.files)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut problems = 0;
    let mut rows: Vec<(PathBuf, Report)> = Vec::new();
    for file in &files {
        let raw = match mailbox::read_message(file, &file.display().to_string()) {
            Ok(raw) => raw,
            Err(mailbox::Error::Read { source, .. }) => {
                errln!("mailroom: cannot read {}: {source}", file.display());
                problems += 1;
                continue;
            }
            Err(e) => {
                errln!("mailroom: {e}");
                problems += 1;
                continue;
            }
        };
        let reports = bounce::parse(&raw);
        if reports.is_empty() && !args.json {
            errln!(
                "mailroom: {}: no bounce, complaint or auto-reply found",
                file.display()
            );
        }
        for r in reports {
            if args.json {
                serde_json::to_writer(&mut out, &json_line(file, &r))?;
                writeln!(out)?;
            } else {
                rows.push((file.clone(), r));
            }
        }
    }
    if !args.json {
        print_table(&mut out, &rows)?;
    }
    out.flush()?;
    Ok(if problems > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_table(out: &mut impl Write, reports: &[(PathBuf, Report)]) -> anyhow::Result<()> {
    let rows = reports;
    if rows.is_empty() {
        return Ok(());
    }
    let name = |p: &Path| {
        one_line(&p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ))
    };
    // Everything but the columns mailroom names itself comes from the bounce: shown, not played.
    let rows: Vec<(&PathBuf, String, String, String)> = rows
        .iter()
        .map(|(f, r)| {
            let mut diagnostic: String = one_line(&r.diagnostic).chars().take(80).collect();
            if r.diagnostic.chars().count() > 80 {
                diagnostic.push('…');
            }
            let status = one_line(r.status.as_deref().unwrap_or("-"));
            (f, one_line(&r.recipient), status, diagnostic)
        })
        .collect();
    let w_file = rows
        .iter()
        .map(|(f, ..)| name(f).len())
        .max()
        .unwrap_or(4)
        .max(4);
    let w_rcpt = rows
        .iter()
        .map(|(_, recipient, ..)| recipient.len())
        .max()
        .unwrap_or(9)
        .max(9);
    writeln!(
        out,
        "{:<w_file$}  {:<w_rcpt$}  {:<10}  {:<8}  {:<9}  {:<15}  DIAGNOSTIC",
        "FILE", "RECIPIENT", "KIND", "STATUS", "ACTION", "REASON"
    )?;
    for ((file, recipient, status, diagnostic), (_, r)) in rows.iter().zip(reports) {
        writeln!(
            out,
            "{:<w_file$}  {:<w_rcpt$}  {:<10}  {:<8}  {:<9}  {:<15}  {}",
            name(file),
            recipient,
            r.kind.as_str(),
            status,
            r.action.map_or("-", |a| a.as_str()),
            r.reason.as_str(),
            diagnostic
        )?;
    }
    Ok(())
}

/// The campaign facts an import needs.
pub(crate) struct Target {
    pub name: String,
    pub store: PathBuf,
    pub return_path: Option<String>,
}

/// Reads the campaign's name, ledger path and return path (the campaign must load cleanly:
/// the same checks as `mailroom check`).
pub(crate) fn target(path: &Path) -> anyhow::Result<Target> {
    let campaign = mailroom::campaign::Campaign::load_without_keys(path)?;
    let config = campaign.config();
    Ok(Target {
        name: campaign.name().to_owned(),
        store: config.store.path.clone(),
        return_path: config.bounces.return_path.clone(),
    })
}

fn import_cmd(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let target = target(&args.campaign)?;
    let dbs = if args.db.is_empty() {
        vec![target.store.clone()]
    } else {
        args.db.clone()
    };
    let mut ledgers = Vec::with_capacity(dbs.len());
    for db in &dbs {
        if !db.exists() {
            anyhow::bail!(
                "ledger {} does not exist\n\nRun `mailroom send` for this campaign first, or pass --db.",
                db.display()
            );
        }
        let ledger = mailroom::store::open(db)?;
        let matcher =
            match import::Matcher::new(&ledger, &target.name, target.return_path.as_deref()) {
                Ok(m) => m,
                Err(e) if dbs.len() > 1 => {
                    return Err(anyhow::Error::from(e).context(format!("ledger {}", db.display())));
                }
                Err(e) => return Err(e.into()),
            };
        ledgers.push((ledger, matcher));
    }
    let mut summaries = vec![import::Summary::default(); ledgers.len()];
    let mut record = |m: &import::MailboxMessage| -> anyhow::Result<()> {
        import::import_routed(&mut ledgers, m, &mut summaries)
            .with_context(|| format!("recording {}", m.source))?;
        Ok(())
    };
    let mut read_errors = 0;
    if let Some(dir) = &args.maildir {
        for message in mailbox::maildir(dir)? {
            match message {
                Ok(m) => record(&m)?,
                Err(e) => {
                    errln!("mailroom: {e:#}");
                    read_errors += 1;
                }
            }
        }
    } else if let Some(file) = &args.mbox {
        for message in mailbox::mbox(file)? {
            match message {
                Ok(m) => record(&m)?,
                // An oversize message is skipped and the import goes on; a read error ends the
                // iterator after this item.
                Err(e) => {
                    errln!("mailroom: {e:#}");
                    read_errors += 1;
                }
            }
        }
    } else if let Some(url) = &args.imap {
        let login = match args.imap_auth {
            ImapAuth::Password => {
                let password = std::env::var(&args.password_env).map_err(|_| {
                    anyhow::anyhow!(
                        "the IMAP password is not set\n\nPut it in the environment variable {} (never on the command line).",
                        args.password_env
                    )
                })?;
                bounce::imap::Login::Password(mailroom::transport::Secret::new(password))
            }
            ImapAuth::Xoauth2 => {
                let campaign = mailroom::campaign::Campaign::load(&args.campaign)?;
                bounce::imap::Login::XOAuth2(mailroom::pipeline::setup::imap_tokens(&campaign)?)
            }
        };
        let url = bounce::imap::ImapUrl::parse(url)?;
        let ca = match &args.imap_ca {
            Some(p) => Some(
                mailroom::bounded::read_file(p, MAX_CA_FILE)
                    .with_context(|| format!("cannot read CA file {}", p.display()))?
                    .with_context(|| {
                        format!(
                            "CA file {} is larger than 16 MiB, so not a certificate file",
                            p.display()
                        )
                    })?,
            ),
            None => None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // One message at a time: each is recorded (outside the runtime) before the next is
        // fetched, so memory holds one message, not the mailbox.
        let mut mailbox =
            runtime.block_on(bounce::imap::Mailbox::open(&url, &login, ca.as_deref()))?;
        while let Some(item) = runtime.block_on(mailbox.next())? {
            match item {
                bounce::imap::Item::Message(m) => {
                    record(&m)?;
                }
                bounce::imap::Item::Skipped(skipped) => {
                    errln!("mailroom: {skipped}");
                    read_errors += 1;
                }
            }
        }
        runtime.block_on(mailbox.logout());
    }
    if dbs.len() == 1 {
        print_summary(&summaries[0], &target.name);
    } else {
        let mut all = import::Summary::default();
        for s in &summaries {
            all.absorb(s.clone());
        }
        print_summary(&all, &target.name);
        for (db, s) in dbs.iter().zip(&summaries) {
            outln!(
                "  ledger {}: {} recorded, {} already recorded",
                mailroom::display::one_line(&db.display().to_string()),
                s.matched,
                s.duplicates
            );
        }
    }
    Ok(if read_errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(s: &import::Summary, campaign: &str) {
    outln!("campaign {campaign}");
    outln!("  messages read       {}", s.read);
    outln!("  not feedback        {}", s.not_feedback);
    outln!("  reports             {}", s.reports);
    outln!("  recorded            {}", s.matched);
    outln!("  unmatched (left)    {}", s.unmatched);
    outln!("  already recorded    {}", s.duplicates);
    outln!("  state changes       {}", s.state_changes);
    outln!("  newly suppressed    {}", s.suppressed);
    for (kind, n) in &s.by_kind {
        outln!("  {kind:<19} {n}");
    }
}
