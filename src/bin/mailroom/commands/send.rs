//! `mailroom send CAMPAIGN`: imports the campaign's contacts into the ledger, confirms, and runs
//! the delivery pipeline with a progress bar (or plain log lines when not on a terminal).
//!
//! Every send reconciles the ledger with contacts.csv first: rows whose message cannot be built
//! are named and skipped, not-yet-sent rows take the file's current values, and not-yet-sent
//! rows that left the file are not sent (see `store::ledger::import`).
//!
//! Exit codes: 0 every message of this run accepted by the relay (or nothing to do), 1 finished
//! with bounces, deferrals, failures or unknown outcomes (or the run was paused, or recipients
//! were left unsent because the relay asked to slow down), 2 error or abort, 130 interrupted by
//! Ctrl-C or SIGTERM.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use mailroom::campaign::Campaign;
use mailroom::model::DeliveryState;
use mailroom::model::{RunOutcome, Shard};
use mailroom::pipeline::{self, Counters, End, Event, EventSink, Outbound, Summary, setup};
use mailroom::shutdown::Shutdown;
use mailroom::store::{self, ledger};
use mailroom::transport::Transport;

use crate::counted::Counted;

mod test_send;

/// Arguments of `mailroom send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The campaign folder (or its campaign.toml).
    pub campaign: PathBuf,
    /// Send to at most N recipients in this run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Render every due message and show what would be sent; connects to nothing, writes nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also send to recipients whose outcome is unknown (the connection was lost after the
    /// message went out): they may receive the message twice.
    #[arg(long)]
    pub resend_unknown: bool,
    /// Do not ask for confirmation (required when not running on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Keep running until every recipient is final, sleeping until deferred retries are due.
    #[arg(long)]
    pub wait: bool,
    /// Show the live dashboard while sending instead of a progress bar. Quitting it (q) stops
    /// claiming new recipients, lets the messages in flight finish and prints the summary.
    #[arg(long)]
    pub dashboard: bool,
    /// Send only shard K of N of the recipients (0 <= K < N), so N hosts can share a campaign,
    /// each with its own ledger; every recipient falls in exactly one shard.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Do not look up the published DKIM keys before sending (by default a key that does not
    /// match the configured one stops the send).
    #[arg(long)]
    pub no_dkim_check: bool,
    /// Send the message of one contact row to these addresses only (a test send, recorded apart
    /// from the campaign; no recipient is touched, no confirmation is asked).
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        conflicts_with_all = ["limit", "dry_run", "resend_unknown", "wait", "dashboard"]
    )]
    pub test: Vec<String>,
    /// With --test: the contact row whose message is sent (the CSV line where its record
    /// starts; default: the first valid row).
    #[arg(long, value_name = "N", requires = "test", conflicts_with = "to")]
    pub line: Option<u64>,
    /// With --test: the contact whose message is sent, by address.
    #[arg(long, value_name = "EMAIL", requires = "test")]
    pub to: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let campaign = Arc::new(Campaign::load(&args.campaign)?);
    if !args.test.is_empty() {
        return test_send::run(&campaign, &args);
    }
    if args.dry_run {
        return dry_run(&campaign, args.resend_unknown, args.shard, args.limit);
    }
    let settings = setup::settings(&campaign)?;
    let relays = setup::relays(&campaign)?;
    let mut options = setup::options(&campaign);
    options.notify = campaign.config().bounces.notify;
    options.guard = (&campaign.config().guard).into();
    if campaign.config().providers.lookup {
        // Background MX lookups through the same resolver as the DKIM check; a resolver that
        // cannot be set up leaves providers unknown, it never stops a send.
        let address = super::doctor::resolver_address(&campaign, None)?;
        match mailroom::dns::Resolver::open(address, mailroom::dns::DEFAULT_TIMEOUT) {
            Ok(r) => {
                options.providers = Some(pipeline::providers::Lookup::dns(r, address.is_some()));
            }
            Err(e) => {
                errln!("warning: mailbox providers will stay unknown: cannot set up DNS ({e})")
            }
        }
    }
    options.limit = args.limit;
    options.resend_unknown = args.resend_unknown;
    options.wait = args.wait;
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    // The dashboard draws on stdout and reads keys from stdin; stderr may go to a file.
    if args.dashboard && !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        bail!(
            "--dashboard needs a terminal\n\n\
             Run it in a terminal, or drop --dashboard and watch with `mailroom dashboard` elsewhere."
        );
    }
    if !args.yes && !interactive {
        bail!(
            "refusing to send without confirmation: not running on a terminal\n\n\
             Pass --yes to send non-interactively."
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        dkim_check(&campaign, args.no_dkim_check).await?;
        let host = settings.host.clone();
        let port = settings.port;
        let security = settings.security;
        let user = settings.username.clone();
        let transport = Transport::new(settings).await?;
        let relays = setup::route(relays, transport).await?;
        let ledger_path = campaign.config().store.path.clone();

        // Rows already final in the ledger are never rendered again: skip validating them.
        let final_addresses = match store::Reader::open_if_any(&ledger_path)? {
            Some(reader) => reader.final_addresses(campaign.name())?,
            None => Default::default(),
        };
        let mut rows = setup::Validated::start(campaign.clone(), final_addresses, args.shard)?;
        let mut counted = Counted::new(
            &mut rows,
            "checking and importing the contacts",
            std::io::stderr().is_terminal(),
        );
        let prepared = pipeline::prepare_shard(
            &ledger_path,
            campaign.name(),
            args.shard,
            &mut counted,
            &host,
            security.as_str(),
        );
        counted.finish();
        let stats = rows.finish();
        let prepared = prepared?;
        let shard_note = args.shard.map_or_else(String::new, |s| {
            format!(
                " in shard {s} ({} more in the other shards)",
                stats.other_shards
            )
        });
        errln!(
            "{}: {} valid contacts{shard_note} ({} new in the ledger){}",
            campaign.name(),
            stats.valid,
            prepared.imported.inserted,
            skipped(stats.invalid, stats.duplicate),
        );
        let csv = campaign.config().contacts.path.display().to_string();
        for row in &stats.unrenderable {
            let prefix = format!("line {}: ", row.line);
            let reason = row.reason.strip_prefix(&prefix).unwrap_or(&row.reason);
            errln!(
                "{csv}:{}: {}: not imported, its message cannot be built: {}",
                row.line,
                mailroom::display::one_line(&row.email),
                mailroom::display::text(reason)
            );
        }
        if prepared.imported.refreshed > 0 {
            errln!(
                "{} recipients not sent yet were updated from {csv}.",
                prepared.imported.refreshed
            );
        }
        if prepared.imported.removed > 0 {
            errln!(
                "{} recipients were removed from {csv} and will not be sent (the report still \
                 counts them as pending or deferred; put them back in the file to send them).",
                prepared.imported.removed
            );
        }
        if prepared.recovered.unknown > 0 {
            errln!(
                "warning: {} recipients were in flight when a previous run stopped; they are now \
                 `unknown` (the relay may or may not have them). --resend-unknown sends them again.",
                prepared.recovered.unknown
            );
        }
        if prepared.recovered.returned > 0 {
            errln!(
                "{} recipients claimed by a previous run that stopped were never sent; they are \
                 due again.",
                prepared.recovered.returned
            );
        }
        let now = mailroom::clock::now_ms();
        let rate = &campaign.config().rate;
        let allowance = store::Reader::open(&ledger_path)?
            .domain_sending(campaign.from_domain(), now - mailroom::schedule::DAY_MS)
            .map(|sending| {
                mailroom::schedule::today(
                    campaign.from_domain(),
                    &rate.warmup,
                    rate.daily_cap,
                    sending,
                    now,
                )
            })?;
        if let Some(a) = &allowance {
            errln!("{}", capitalized(&a.to_string()));
        }
        let due = prepared.due(args.resend_unknown)?;
        let planned = args.limit.map_or(due, |l| l.min(due));
        // Outside the send window nothing is sent or charged (with --wait the run waits).
        if let Some(window) = campaign.window()
            && planned > 0
            && !args.wait
            && campaign.config().contacts.timezone_column.is_none()
            && let mailroom::schedule::Status::Closed { opens_at } = window.status(now, None)
        {
            prepared.close(RunOutcome::Window)?;
            outln!("{}", window_closed(opens_at, window.zone_name()));
            return Ok(ExitCode::SUCCESS);
        }
        if planned == 0 {
            let (deferred, next) =
                store::Reader::open(&ledger_path)?.deferred_summary(prepared.campaign_id)?;
            prepared.close(RunOutcome::NothingDue)?;
            outln!("Nothing is due.");
            print_deferred(deferred, next);
            // Deferred recipients are not final yet: not a clean "all done".
            return Ok(code(deferred));
        }
        if !args.yes {
            let who = user.map_or(String::new(), |u| format!(", as {u}"));
            err!(
                "About to send {planned} messages\n  relay:  {host}:{port} ({}{who})\n  from:   {}\n  \
                 ledger: {}\nSend now? [y/N] ",
                security.as_str(),
                campaign.config().campaign.from,
                ledger_path.display(),
            );
            let _ = std::io::stderr().flush();
            let mut answer = String::new();
            std::io::stdin()
                .read_line(&mut answer)
                .context("cannot read the answer")?;
            if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
                prepared.close(RunOutcome::Cancelled)?;
                errln!("Not sent.");
                return Ok(ExitCode::from(1));
            }
        }

        let shutdown = Shutdown::new();
        shutdown.install_ctrl_c(|| {
            errln!(
                "\nstopping: no new messages; waiting for those in flight (Ctrl-C again quits at once)"
            );
        });
        let counters = Arc::new(Counters::default());
        let progress = if args.dashboard {
            Progress::silent()
        } else {
            Progress::start(interactive, counters.clone(), planned)
        };
        let started = std::time::Instant::now();
        let run = prepared.send(Outbound {
            relays,
            render: Arc::new(setup::CampaignRender(campaign.clone())),
            options,
            shutdown: shutdown.clone(),
            counters,
            events: progress.sink(),
        });
        let summary = if args.dashboard {
            with_dashboard(run, &shutdown, ledger_path.clone(), campaign.name()).await?
        } else {
            run.await
        };
        progress.finish().await;
        let took = started.elapsed();
        let zone = campaign
            .window()
            .map_or_else(|| "UTC".to_owned(), |w| w.zone_name().to_owned());
        report(&summary?, &ledger_path, took, &zone)
    })
}

/// The whole DKIM key check before `send` may take this long; then it warns and sends.
const DKIM_CHECK_TIME: Duration = Duration::from_secs(6);

/// Before the first connection: the DKIM domains must be aligned with From, and each
/// published key must verify a message signed with the configured one. A record that is
/// missing or a lookup that fails warns (the key may not be published yet for a test domain);
/// a key that does not match stops the send (exit 2, nothing sent).
async fn dkim_check(campaign: &Campaign, skip: bool) -> anyhow::Result<()> {
    use mailroom::doctor::dns::dkim::{Published, check_keys};
    let Some(signer) = campaign.signer() else {
        return Ok(());
    };
    for public in signer.signatures() {
        if !mailroom::dkim::is_aligned(&public.domain, campaign.from_domain()) {
            bail!(
                "{}: [dkim] domain {} is not aligned with the From domain {}: DMARC would fail for every message; refusing to send\n\nSign with domain = \"{}\" (or a parent or subdomain of it), or change [campaign] from.",
                campaign.config_path().display(),
                public.domain,
                campaign.from_domain(),
                campaign.from_domain()
            );
        }
    }
    if skip {
        errln!(
            "DKIM: --no-dkim-check: the published keys were not looked up; messages are signed with the configured keys as they are"
        );
        return Ok(());
    }
    let address = super::doctor::resolver_address(campaign, None)?;
    let resolver = mailroom::dns::Resolver::open(address, Duration::from_secs(4))?;
    let Ok(checks) = tokio::time::timeout(DKIM_CHECK_TIME, check_keys(&resolver, signer)).await
    else {
        errln!(
            "warning: DKIM: the key lookups did not finish within {} s (resolver {}); sending without checking the published keys",
            DKIM_CHECK_TIME.as_secs(),
            resolver.label()
        );
        return Ok(());
    };
    for c in checks {
        match c.published {
            Published::Matches { kind, .. } => {
                errln!("DKIM: {} ({kind}) matches the configured key", c.name);
            }
            Published::Missing => errln!(
                "warning: DKIM: no key record at {}: receivers cannot verify the signature until it is published:\n  {}",
                c.name,
                c.expected_record
            ),
            Published::LookupFailed { error } => {
                errln!("warning: DKIM: could not check the published key ({error}); sending anyway")
            }
            Published::Mismatch { record, reason, .. } => bail!(
                "DKIM: the key published at {} does not verify a message signed with the configured key ({reason}); refusing to send, nothing was sent\n\npublished: {record}\nPublish the record of the configured key instead:\n  {}\nor point [dkim] at the key that record belongs to. --no-dkim-check sends anyway.",
                c.name,
                c.expected_record
            ),
            Published::Invalid { record, reason } => bail!(
                "DKIM: the record at {} is not a usable key record ({reason}); refusing to send, nothing was sent\n\npublished: {record}\nPublish:\n  {}",
                c.name,
                c.expected_record
            ),
            Published::Revoked { .. } => bail!(
                "DKIM: the key at {} is revoked (empty p=); refusing to send, nothing was sent\n\nPublish:\n  {}",
                c.name,
                c.expected_record
            ),
        }
    }
    Ok(())
}

fn skipped(invalid: u64, duplicate: u64) -> String {
    if invalid + duplicate == 0 {
        String::new()
    } else {
        format!(
            "; skipped {invalid} invalid and {duplicate} duplicate rows (`mailroom check` lists them)"
        )
    }
}

/// One line per `[[relay]]`: what it took, and whether it failed (a dead relay is named).
fn print_relays(relays: &[pipeline::RelayReport]) {
    for r in relays {
        let failed = match (&r.last_failure, r.is_dead()) {
            (Some(why), true) => format!("; DEAD: never took a message ({why})"),
            (Some(why), false) => format!("; cool-offs: {}, the last: {why}", r.cooloffs),
            (None, _) => String::new(),
        };
        outln!(
            "Relay {}: {} transactions, {} accepted{failed}.",
            mailroom::display::one_line(&r.name),
            r.transactions,
            r.accepted
        );
    }
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn print_deferred(deferred: u64, next: Option<i64>) {
    if deferred > 0 {
        let next = next.map_or_else(|| "now".to_owned(), when);
        outln!(
            "{deferred} recipients are deferred; the next retry is due at {next}. \
             Run `mailroom send` again then, or use --wait."
        );
    }
}

fn report(
    summary: &Summary,
    ledger: &std::path::Path,
    took: std::time::Duration,
    zone: &str,
) -> anyhow::Result<ExitCode> {
    let transactions = summary.transactions;
    let secs = took.as_secs_f64();
    outln!(
        "This run: {} accepted by the relay, {} deferred, {} bounced (hard {}, soft {}), {} failed, \
         {} unknown, {} suppressed; {transactions} SMTP transactions in {secs:.2} s ({:.0}/s).",
        summary.accepted,
        summary.deferred,
        summary.bounced_hard + summary.bounced_soft,
        summary.bounced_hard,
        summary.bounced_soft,
        summary.failed,
        summary.unknown,
        summary.suppressed,
        transactions as f64 / secs.max(1e-3),
    );
    if summary.throttled > 0 {
        outln!(
            "The relay asked to slow down {} times; those messages were given back uncharged \
             and sent again or left for later.",
            summary.throttled
        );
    }
    if let Some(port) = summary.port
        && summary.relays.is_empty()
    {
        outln!("Relay port used: {port}.");
    }
    print_relays(&summary.relays);
    if summary.providers_left > 0 {
        outln!(
            "Mailbox providers: {} recipient domains were not looked up before the run ended; \
             later sends of this campaign go on looking them up (until then the report \
             counts them as provider `unknown`).",
            summary.providers_left
        );
    }
    let campaign_line: Vec<String> = summary
        .states
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    outln!("Campaign so far: {}.", campaign_line.join(", "));
    outln!(
        "\"Accepted by the relay\" means the relay took the message, not that it reached an inbox; \
         bounces can still arrive later."
    );
    print_deferred(summary.deferred_total, summary.next_retry_at);
    if summary.unknown > 0 {
        outln!(
            "{} outcomes are unknown (the connection was lost after the message was sent); they \
             are not resent unless you pass --resend-unknown.",
            summary.unknown
        );
    }
    let pending = summary.state(DeliveryState::Pending);
    // Anything deferred, from this run or an earlier one, means the campaign is not done: never
    // exit 0 while a recipient is still deferred (with or without --wait).
    let problems = summary.deferred_total.max(summary.deferred)
        + summary.bounced_hard
        + summary.bounced_soft
        + summary.failed
        + summary.unknown;
    match &summary.end {
        End::Interrupted => {
            outln!(
                "Interrupted: {pending} recipients were not sent; run `mailroom send` to continue."
            );
            Ok(ExitCode::from(130))
        }
        End::Aborted(why) => bail!(
            "send aborted: {why}\n\nNo recipient was charged for this; fix the problem and run \
             `mailroom send` again (ledger: {}).",
            ledger.display()
        ),
        End::Paused(why) => {
            outln!(
                "Paused: {why}\n{pending} recipients are untouched; run `mailroom send` again \
                 later."
            );
            Ok(ExitCode::from(1))
        }
        End::Limit => {
            outln!("Stopped at --limit; {pending} recipients are still pending.");
            Ok(code(problems))
        }
        End::DailyCap => {
            outln!(
                "Stopped at today's allowance ([rate] daily_cap / warmup); {pending} recipients \
                 are still pending."
            );
            Ok(code(problems))
        }
        End::Window { opens_at } => {
            outln!(
                "{} {pending} recipients are still pending.",
                window_closed(*opens_at, zone)
            );
            Ok(code(problems))
        }
        End::Throttled(left) => {
            outln!(
                "{left} recipients were not sent because the relay asked to slow down; run \
                 `mailroom send` again later or use --wait."
            );
            Ok(ExitCode::from(1))
        }
        End::Finished => Ok(code(problems)),
    }
}

/// "The send window is closed; it opens at ..." for the user, in the window's zone and UTC.
fn window_closed(opens_at: Option<i64>, zone: &str) -> String {
    let Some(at) = opens_at else {
        return "The send window is closed and never opens ([schedule] allows no day): nothing \
                was sent."
            .into();
    };
    let local = jiff::Timestamp::from_millisecond(at)
        .ok()
        .zip(mailroom::schedule::zone(zone).ok())
        .map(|(t, z)| t.to_zoned(z).strftime("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_default();
    format!(
        "The send window is closed: it opens at {local} ({} UTC); nothing more was sent or \
         charged. Run `mailroom send` again then, or use --wait.",
        when(at).trim_end_matches(" UTC")
    )
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

fn code(problems: u64) -> ExitCode {
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn dry_run(
    campaign: &Campaign,
    resend_unknown: bool,
    shard: Option<Shard>,
    limit: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let path = &campaign.config().store.path;
    // Existing ledger states, read-only: a dry run writes nothing. The ledger applies the same
    // "is it due?" rule as the dispatcher; a contact it does not know yet is due.
    let now = ledger::now_ms();
    let known = match store::Reader::open_if_any(path)? {
        Some(reader) => reader.due_by_address(campaign.name(), now, resend_unknown)?,
        None => std::collections::HashMap::new(),
    };
    let (mut due, mut done, mut largest, mut total_bytes) = (0u64, 0u64, 0usize, 0usize);
    let mut unrenderable = 0u64;
    for entry in campaign.contacts()? {
        let mailroom::campaign::ContactEntry::Valid(contact) = entry? else {
            continue;
        };
        if shard.is_some_and(|s| {
            !s.contains(mailroom::campaign::recipient_bucket(
                campaign.name(),
                &contact.email,
            ))
        }) {
            continue;
        }
        let is_due = known.get(&contact.email).copied().unwrap_or(true);
        if !is_due {
            done += 1;
            continue;
        }
        // The same rule as the real send: a row whose message cannot be built is skipped (and
        // named), not fatal for the whole campaign.
        let rendered = match campaign.render(&contact) {
            Ok(r) => r,
            Err(e) => {
                let reason = e.row_reason().map_or_else(|| e.to_string(), str::to_owned);
                errln!(
                    "{}:{}: {}: would not be sent, its message cannot be built: {reason}",
                    campaign.config().contacts.path.display(),
                    contact.line,
                    contact.email
                );
                unrenderable += 1;
                continue;
            }
        };
        due += 1;
        // `--limit N` sends the first N due (every due message is still built, to find the
        // ones that cannot be).
        if limit.is_none_or(|l| due <= l) {
            largest = largest.max(rendered.bytes.len());
            total_bytes += rendered.bytes.len();
        }
    }
    let sending = limit.map_or(due, |l| due.min(l));
    let limited = match limit {
        Some(l) if due > l => format!(" (--limit {l}; {due} are due)"),
        _ => String::new(),
    };
    let smtp = &campaign.config().smtp;
    outln!(
        "Dry run: would send {sending} messages{limited} ({} bytes, largest {largest}) to {}:{} \
         ({}) from {}; {done} recipients are already done or not due. Nothing was sent or \
         written.",
        total_bytes,
        smtp.host,
        smtp.port,
        smtp.security,
        campaign.config().campaign.from,
    );
    Ok(code(unrenderable))
}

/// Runs the send with the dashboard on screen. The dashboard reads the ledger the run writes,
/// through its own read-only connection, exactly as `mailroom dashboard` in another terminal
/// would. Quitting it before the run ends is a graceful stop (like a first Ctrl-C, which the
/// dashboard receives as a key in raw mode); after the run ends it stays up until quit, so the
/// final numbers can be read.
async fn with_dashboard<F>(
    run: F,
    shutdown: &Shutdown,
    ledger: PathBuf,
    campaign: &str,
) -> anyhow::Result<F::Output>
where
    F: std::future::Future,
{
    let ui = mailroom::tui::run(ledger, Some(campaign.to_owned()), std::future::pending());
    let mut ui = std::pin::pin!(ui);
    let mut run = std::pin::pin!(run);
    let (summary, ui_result) = tokio::select! {
        summary = &mut run => (summary, ui.await),
        ui_result = &mut ui => {
            shutdown.trigger();
            errln!("dashboard closed: no new messages; waiting for those in flight");
            (run.await, ui_result)
        }
    };
    ui_result.context("the dashboard failed")?;
    Ok(summary)
}

/// The progress display: an indicatif bar on a terminal, one log line per message otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
    /// One log line per outcome on stdout (not on a terminal), buffered: at thousands of
    /// messages a second, a write(2) per line costs more than the line is worth. Flushed every
    /// 100 ms and at the end, so a log follower stays current.
    lines: Option<Arc<std::sync::Mutex<std::io::BufWriter<std::io::Stdout>>>>,
}

impl Progress {
    fn start(interactive: bool, counters: Arc<Counters>, planned: u64) -> Progress {
        if !interactive {
            let lines = Arc::new(std::sync::Mutex::new(std::io::BufWriter::new(
                std::io::stdout(),
            )));
            let out = lines.clone();
            let ticker = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let _ = lock(&out).flush();
                }
            });
            return Progress {
                bar: None,
                ticker: Some(ticker),
                lines: Some(lines),
            };
        }
        let bar = indicatif::ProgressBar::new(planned);
        let style = indicatif::ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:30} {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        let b = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let c = &counters;
                b.set_position(c.done());
                b.set_message(format!(
                    "accepted {} · deferred {} · bounced {} · failed {} · unknown {} · throttled {}",
                    c.accepted.load(Ordering::Relaxed),
                    c.deferred.load(Ordering::Relaxed),
                    c.bounced_hard.load(Ordering::Relaxed) + c.bounced_soft.load(Ordering::Relaxed),
                    c.failed.load(Ordering::Relaxed),
                    c.unknown.load(Ordering::Relaxed),
                    c.throttled.load(Ordering::Relaxed),
                ));
            }
        });
        Progress {
            bar: Some(bar),
            ticker: Some(ticker),
            lines: None,
        }
    }

    /// Nothing at all: the dashboard owns the screen.
    fn silent() -> Progress {
        Progress {
            bar: None,
            ticker: None,
            lines: None,
        }
    }

    /// Plain mode: every outcome as a log line on stdout.
    fn sink(&self) -> Option<EventSink> {
        let out = self.lines.clone()?;
        Some(Arc::new(move |e: &Event| {
            // The reply text comes from the relay: shown, never played (escape sequences).
            let detail = mailroom::display::one_line(&e.detail);
            let email = mailroom::display::one_line(&e.email);
            let _ = writeln!(lock(&out), "{:<12} {:<40} {}", e.outcome, email, detail);
        }))
    }

    async fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
            let _ = t.await;
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        if let Some(out) = self.lines {
            let _ = lock(&out).flush();
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
