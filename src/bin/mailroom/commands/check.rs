//! `mailroom check CAMPAIGN [--json]`: loads the campaign, streams every contact, renders every
//! valid row (that is what proves header safety and gives the size range) and prints a summary.
//! Exit 0 clean, 1 contact/template problems, 2 the campaign cannot be read at all.
//! Rendering runs on worker threads fed in batches over a bounded channel, so memory stays flat.

use mailroom::display::{one_line, text};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mailroom::campaign::{Campaign, Contact, ContactEntry};
use serde::Serialize;

use crate::counted::Counted;

/// Arguments of `mailroom check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Campaign folder (holding campaign.toml) or the toml file itself.
    pub campaign: PathBuf,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    pub json: bool,
}

/// How many invalid rows / duplicates the text summary prints before "and N more".
const TEXT_LIMIT: usize = 50;
/// Rows per batch handed to a render worker: large enough to make channel traffic negligible.
const BATCH: usize = 512;

#[derive(Debug, Serialize)]
struct Invalid {
    line: u64,
    email: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Duplicate {
    line: u64,
    first_line: u64,
    email: String,
}

#[derive(Debug, Serialize)]
struct Problem {
    file: String,
    line: Option<u64>,
    message: String,
}

#[derive(Debug, Serialize)]
struct Size {
    min: usize,
    max: usize,
}

#[derive(Debug, Serialize)]
struct Attachment {
    file: String,
    bytes: u64,
    /// What it adds to every message (base64 and its part headers).
    encoded_bytes: usize,
}

#[derive(Debug, Serialize)]
struct Oversize {
    line: u64,
    email: String,
    bytes: usize,
}

#[derive(Debug, Serialize)]
struct WindowReport {
    timezone: String,
    days: Vec<String>,
    hours: String,
    not_before: Option<String>,
    /// Whether the window is open now.
    open: bool,
    /// When it closes (open) or opens next (closed), RFC 3339 UTC; null when it never opens.
    closes_at: Option<String>,
    opens_at: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    campaign: Option<String>,
    config: Option<String>,
    contacts: u64,
    valid: u64,
    invalid: Vec<Invalid>,
    invalid_count: u64,
    duplicates: Vec<Duplicate>,
    duplicate_count: u64,
    errors: Vec<Problem>,
    templates: Vec<String>,
    missing_variables: Vec<mailroom::campaign::MissingVariable>,
    columns: Vec<String>,
    message_size: Option<Size>,
    /// `[campaign] attachments`, in every message.
    attachments: Vec<Attachment>,
    /// `[smtp] max_message_size`, when set.
    max_message_size: Option<u64>,
    /// Messages larger than `max_message_size` (`send` would fail them without sending).
    oversize: Vec<Oversize>,
    oversize_count: u64,
    /// `[schedule]`, and where the window stands now.
    window: Option<WindowReport>,
    /// Today's allowance of the From domain (`[rate] daily_cap` and `warmup`).
    allowance: Option<mailroom::schedule::Allowance>,
    /// Seed addresses (`[seeds]`).
    seeds: Vec<String>,
    /// False when rendering was skipped because a template needs a column the header lacks.
    rendered: bool,
    /// The `[dkim]` signatures ("d=example.com s=mail2026 (RSA 2048-bit)"); empty without it.
    dkim: Vec<String>,
    /// Bytes the DKIM-Signature headers add to each message (included in `message_size`).
    dkim_signature_bytes: Option<usize>,
    notes: Vec<String>,
}

/// What one render worker found.
#[derive(Default)]
struct Rendered {
    valid: u64,
    min: Option<usize>,
    max: usize,
    invalid: Vec<Invalid>,
    oversize: Vec<Oversize>,
}

fn render_worker(
    campaign: &Campaign,
    rx: &Mutex<Receiver<Vec<Contact>>>,
    now: SystemTime,
) -> Rendered {
    let mut out = Rendered::default();
    let limit = campaign.config().max_message_size();
    loop {
        // The lock is held only to take one batch, never while rendering.
        let batch = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return out,
        };
        let Ok(batch) = batch else { return out };
        for contact in batch {
            // Unsigned: signing every row would cost a millisecond each with RSA; one message
            // is signed in `dkim` below, and its signature size is added to the range.
            match campaign.render_unsigned_at(&contact, now) {
                Ok(r) => {
                    out.valid += 1;
                    let n = r.bytes.len();
                    if limit.is_some_and(|l| n as u64 > l) {
                        out.oversize.push(Oversize {
                            line: contact.line,
                            email: contact.email.clone(),
                            bytes: n,
                        });
                    }
                    out.min = Some(out.min.map_or(n, |m| m.min(n)));
                    out.max = out.max.max(n);
                }
                Err(e) => out.invalid.push(Invalid {
                    line: contact.line,
                    email: contact.email.clone(),
                    reason: e.row_reason().map_or_else(|| e.to_string(), str::to_owned),
                }),
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut report = Report::default();
    let campaign = match Campaign::load(&args.campaign) {
        Ok(c) => c,
        Err(e) => {
            if args.json {
                report.errors.push(Problem {
                    file: e.file().display().to_string(),
                    line: e.line(),
                    message: format!("{:#}", anyhow::Error::new(e)),
                });
                outln!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(ExitCode::from(2));
            }
            return Err(anyhow::Error::new(e).context(format!(
                "cannot check the campaign {}",
                args.campaign.display()
            )));
        }
    };
    report.campaign = Some(campaign.name().to_owned());
    report.config = Some(campaign.config_path().display().to_string());
    report.templates = campaign.template_names();
    report.columns = campaign.columns().to_vec();
    report.missing_variables = campaign.missing_variables();
    let csv_path = campaign.config().contacts.path.display().to_string();
    for m in &report.missing_variables {
        report.errors.push(Problem {
            file: m.file.display().to_string(),
            line: m.line,
            message: format!(
                "template `{}` uses `{}`, which is not a column of {csv_path} (columns: {})",
                m.template,
                m.variable,
                mailroom::campaign::column_list(campaign.columns())
            ),
        });
    }
    report.rendered = report.missing_variables.is_empty();
    report.max_message_size = campaign.config().max_message_size();
    report.seeds = campaign.seeds().to_vec();
    let now = mailroom::clock::now_ms();
    if let (Some(w), Some(sc)) = (campaign.window(), &campaign.config().schedule) {
        let rfc = |ms: i64| {
            jiff::Timestamp::from_millisecond(ms)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        let (open, closes_at, opens_at) = match w.status(now, None) {
            mailroom::schedule::Status::Open { closes_at } => (true, Some(rfc(closes_at)), None),
            mailroom::schedule::Status::Closed { opens_at } => (false, None, opens_at.map(rfc)),
        };
        report.window = Some(WindowReport {
            timezone: sc.timezone.clone(),
            days: sc.days.clone(),
            hours: sc.hours.clone(),
            not_before: sc.not_before.clone(),
            open,
            closes_at,
            opens_at,
        });
    }
    let rate = &campaign.config().rate;
    let ledger = &campaign.config().store.path;
    let sending = if ledger.exists() {
        mailroom::store::Reader::open(ledger)
            .and_then(|r| {
                r.domain_sending(campaign.from_domain(), now - mailroom::schedule::DAY_MS)
            })
            .unwrap_or((None, 0))
    } else {
        (None, 0)
    };
    report.allowance = mailroom::schedule::today(
        campaign.from_domain(),
        &rate.warmup,
        rate.daily_cap,
        sending,
        now,
    );
    report.attachments = campaign
        .attachments()
        .into_iter()
        .map(|(f, encoded_bytes)| Attachment {
            file: f.written,
            bytes: f.bytes,
            encoded_bytes,
        })
        .collect();
    notes(&campaign, &mut report);

    dkim(&campaign, &mut report);
    let fatal = scan(&campaign, &mut report, args.json)?;
    if let (Some(size), Some(extra)) = (report.message_size.as_mut(), report.dkim_signature_bytes) {
        size.min += extra;
        size.max += extra;
    }
    report.invalid.sort_by_key(|i| i.line);
    report.oversize.sort_by_key(|o| o.line);
    report.duplicates.sort_by_key(|d| d.line);
    if let Some(e) = &fatal {
        report.errors.push(Problem {
            file: e.file().display().to_string(),
            line: e.line(),
            message: e.to_string(),
        });
    }

    if fatal.is_none() && report.contacts == 0 {
        report.errors.push(Problem {
            file: csv_path.clone(),
            line: None,
            message: "the contacts file has a header row but no contacts".into(),
        });
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    if let Some(e) = fatal {
        if args.json {
            return Ok(ExitCode::from(2));
        }
        return Err(anyhow::Error::new(e).context("reading the contacts stopped"));
    }
    let problems = report.invalid_count > 0
        || report.duplicate_count > 0
        || report.oversize_count > 0
        || !report.errors.is_empty();
    Ok(if problems {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Streams the contacts, renders valid ones on worker threads; returns a fatal mid-file error.
fn scan(
    campaign: &Campaign,
    report: &mut Report,
    json: bool,
) -> anyhow::Result<Option<mailroom::campaign::Error>> {
    let contacts = campaign.contacts()?;
    let keep = |len: usize| json || len < TEXT_LIMIT;
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8);
    let now = SystemTime::now();
    let render = report.rendered;
    // Capacity 2 per worker: enough to keep them busy, small enough to bound memory.
    let (tx, rx) = sync_channel::<Vec<Contact>>(workers * 2);
    let rx = Arc::new(Mutex::new(rx));
    let mut fatal = None;
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..if render { workers } else { 0 })
            .map(|_| {
                let rx = Arc::clone(&rx);
                s.spawn(move || render_worker(campaign, &rx, now))
            })
            .collect();
        let mut batch = Vec::with_capacity(BATCH);
        // Rows read so far; the bounded channel keeps reading just ahead of rendering.
        let terminal = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut counted = Counted::new(contacts, "checking the contacts", terminal);
        for entry in &mut counted {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            };
            report.contacts += 1;
            match entry {
                ContactEntry::Valid(c) => {
                    if render {
                        batch.push(c);
                        if batch.len() == BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            if tx.send(full).is_err() {
                                break;
                            }
                        }
                    } else {
                        report.valid += 1;
                    }
                }
                ContactEntry::Invalid {
                    line,
                    email,
                    reason,
                } => {
                    report.invalid_count += 1;
                    if keep(report.invalid.len()) {
                        report.invalid.push(Invalid {
                            line,
                            email,
                            reason,
                        });
                    }
                }
                ContactEntry::Duplicate {
                    line,
                    first_line,
                    email,
                } => {
                    report.duplicate_count += 1;
                    if keep(report.duplicates.len()) {
                        report.duplicates.push(Duplicate {
                            line,
                            first_line,
                            email,
                        });
                    }
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        let results = handles.into_iter().map(|h| h.join()).collect::<Vec<_>>();
        counted.finish();
        results
    });
    for r in results {
        let r = r.map_err(|_| anyhow::anyhow!("a render worker panicked"))?;
        report.valid += r.valid;
        report.invalid_count += r.invalid.len() as u64;
        for i in r.invalid {
            if keep(report.invalid.len()) {
                report.invalid.push(i);
            }
        }
        report.oversize_count += r.oversize.len() as u64;
        for o in r.oversize {
            if keep(report.oversize.len()) {
                report.oversize.push(o);
            }
        }
        if let Some(min) = r.min {
            let size = report.message_size.get_or_insert(Size { min, max: r.max });
            size.min = size.min.min(min);
            size.max = size.max.max(r.max);
        }
    }
    Ok(fatal)
}

/// `[dkim]`, checked offline (no DNS: `doctor --dns` looks the keys up): each signing domain
/// must be aligned with From (equal, or one a parent of the other), and one message is signed.
fn dkim(campaign: &Campaign, report: &mut Report) {
    let Some(signer) = campaign.signer() else {
        return;
    };
    let config = campaign.config_path().display().to_string();
    for p in signer.signatures() {
        report
            .dkim
            .push(format!("d={} s={} ({})", p.domain, p.selector, p.kind));
        if !mailroom::dkim::is_aligned(&p.domain, campaign.from_domain()) {
            report.errors.push(Problem {
                file: config.clone(),
                line: None,
                message: format!(
                    "[dkim] domain {} is not aligned with the From domain {}: DMARC fails for every message (sign with domain = \"{}\", a parent or a subdomain of it)",
                    p.domain,
                    campaign.from_domain(),
                    campaign.from_domain()
                ),
            });
        }
    }
    match signer.headers_for(b"From: a@b.example\r\n\r\nx\r\n") {
        Ok(h) => report.dkim_signature_bytes = Some(h.len()),
        Err(e) => report.errors.push(Problem {
            file: config,
            line: None,
            message: e.to_string(),
        }),
    }
}

fn notes(campaign: &Campaign, report: &mut Report) {
    let cfg = campaign.config();
    if cfg.relay.is_empty() && cfg.smtp.host.is_empty() {
        report
            .notes
            .push("[smtp] host is not set: `mailroom send` needs it (check does not)".into());
    }
    let table = if cfg.relay.is_empty() {
        "smtp"
    } else {
        "relay"
    };
    for smtp in cfg.relay_tables() {
        if let Some(var) = &smtp.password_env
            && std::env::var_os(var).is_none()
        {
            report.notes.push(format!(
                "the environment variable {var} ({table}.password_env) is not set: export it before `mailroom send` (check does not need it)"
            ));
        }
    }
    if !campaign.has_visible_unsubscribe_link() {
        report.notes.push(
            "warning: the body has no visible unsubscribe link (no {{unsubscribe_url}}, no unsubscribe URL): Gmail and Yahoo ask for one in the message as well as the List-Unsubscribe header".into(),
        );
    }
    if cfg.dkim.is_none() {
        report.notes.push(
            "no [dkim]: messages are not signed by mailroom, so the relay must sign them (confirm with `mailroom doctor --inspect` on a received copy)".into(),
        );
    }
    if cfg.unsubscribe.is_none() {
        report.notes.push(
            "no [unsubscribe] url: messages carry no List-Unsubscribe header, which Gmail and Yahoo require for bulk mail".into(),
        );
    }
}

fn print_text(r: &Report) {
    if let (Some(name), Some(config)) = (&r.campaign, &r.config) {
        outln!("campaign   {name} ({config})");
    }
    outln!(
        "templates  {} compiled: {}",
        r.templates.len(),
        r.templates.join(", ")
    );
    outln!(
        "contacts   {} read: {} valid, {} invalid, {} duplicates",
        r.contacts,
        r.valid,
        r.invalid_count,
        r.duplicate_count
    );
    if !r.invalid.is_empty() {
        outln!("\ninvalid contacts (skipped):");
        for i in r.invalid.iter().take(TEXT_LIMIT) {
            let email = if i.email.is_empty() { "-" } else { &i.email };
            outln!("  {}  [{}]", text(&i.reason), one_line(email));
        }
        more(r.invalid_count, TEXT_LIMIT);
    }
    if !r.duplicates.is_empty() {
        outln!("\nduplicates (skipped):");
        for d in r.duplicates.iter().take(TEXT_LIMIT) {
            outln!(
                "  line {}: {} (first on line {})",
                d.line,
                one_line(&d.email),
                d.first_line
            );
        }
        more(r.duplicate_count, TEXT_LIMIT);
    }
    if !r.errors.is_empty() {
        outln!("\nproblems:");
        for e in &r.errors {
            let loc = e.line.map_or_else(String::new, |l| format!(":{l}"));
            outln!("  {}{loc}: {}", e.file, text(&e.message));
        }
    }
    if !r.rendered {
        outln!("\nmessages not rendered: fix the template variables above first");
    }
    for a in &r.attachments {
        outln!(
            "attachment {} ({} bytes; {} in every message)",
            one_line(&a.file),
            a.bytes,
            a.encoded_bytes
        );
    }
    if let Some(s) = &r.message_size {
        let limit = r
            .max_message_size
            .map_or_else(String::new, |m| format!(" ([smtp] max_message_size {m})"));
        outln!("\nmessage size {}..{} bytes{limit}", s.min, s.max);
    }
    if !r.oversize.is_empty() {
        outln!("\nmessages over [smtp] max_message_size (`send` fails them without sending):");
        for o in r.oversize.iter().take(TEXT_LIMIT) {
            outln!(
                "  line {}: {} bytes [{}]",
                o.line,
                o.bytes,
                one_line(&o.email)
            );
        }
        more(r.oversize_count, TEXT_LIMIT);
    }
    if let Some(w) = &r.window {
        let state = match (w.open, &w.closes_at, &w.opens_at) {
            (true, Some(c), _) => format!("open now, until {c}"),
            (false, _, Some(o)) => format!("closed now, opens {o}"),
            _ => "closed: it never opens (no weekday allowed)".into(),
        };
        outln!(
            "send window {} {} ({}): {state}",
            w.hours,
            if w.days.is_empty() {
                "every day".to_owned()
            } else {
                w.days.join(", ")
            },
            w.timezone
        );
    }
    if let Some(a) = &r.allowance {
        outln!("{a}");
    }
    if !r.seeds.is_empty() {
        outln!("seeds      {}", one_line(&r.seeds.join(", ")));
    }
    for d in &r.dkim {
        outln!("dkim       signing with {d}");
    }
    for n in &r.notes {
        outln!("note: {n}");
    }
    let clean = r.invalid_count == 0
        && r.duplicate_count == 0
        && r.oversize_count == 0
        && r.errors.is_empty();
    outln!(
        "\n{}",
        if clean {
            "ok: the campaign is ready (nothing was sent)"
        } else {
            "problems found (see above); invalid and duplicate rows would be skipped by `mailroom send`"
        }
    );
}

fn more(total: u64, shown: usize) {
    if total > shown as u64 {
        outln!(
            "  ... and {} more (use --json for all)",
            total - shown as u64
        );
    }
}
