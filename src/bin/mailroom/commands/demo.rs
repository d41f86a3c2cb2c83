//! `mailroom demo [--dir DIR]`: the whole flow on a fresh machine with no relay account. Starts
//! the sandbox (STARTTLS + AUTH) on a free loopback port, writes an example campaign whose
//! recipients meet every kind of relay behaviour, sends it through the delivery pipeline, imports
//! the scripted bounces and complaints with the real `bounces import` command, then shows the
//! dashboard (on a terminal) or the report.
//!
//! Sending uses `pipeline::setup` + `pipeline::run` directly rather than the `send` command, so
//! the demo prints one compact line per pass instead of a line per recipient and needs no
//! confirmation. The other subcommands are invoked in-process through their own clap `Args`,
//! exactly as a user would type them, so they cannot drift. The sandbox runs on its own runtime
//! so those commands can build theirs.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use mailroom::campaign::Campaign;
use mailroom::model::DeliveryState;
use mailroom::pipeline::{self, Counters, End, Outbound, Render, setup};
use mailroom::sandbox::{self, SandboxConfig, Script};
use mailroom::shutdown::Shutdown;
use mailroom::transport::Transport;

/// Arguments of `mailroom demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workspace folder (created; must not already hold a demo) [default: a new temporary folder].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print the report instead of opening the dashboard, even on a terminal.
    #[arg(long)]
    no_dashboard: bool,
}

/// The sandbox script: which demo recipients meet which relay behaviour.
const SCRIPT: &str = r#"# Relay behaviour for the mailroom demo (format: docs/sandbox.md).

# Greylisting: the first attempt is deferred with 450 4.2.0, the retry is accepted.
[[rule]]
recipient = "*@greylist.example"
action = "greylist"
attempts = 1

# Addresses that do not exist: rejected at RCPT.
[[rule]]
recipient = "gone-*@*"
action = "reject"
reply = "550 5.1.1 user unknown"

# Full mailboxes: rejected after the message.
[[rule]]
recipient = "*@full.example"
action = "reject"
reply = "552 5.2.2 mailbox full"
at = "message"

# Accepted now, bounced later by the receiving side (an RFC 3464 DSN).
[[rule]]
recipient = "moved-*@*"
action = "bounce"
status = "5.1.1"
diagnostic = "smtp; 550 5.1.1 the mailbox was closed"

# Accepted, then reported as spam by the recipient (an RFC 5965 ARF report).
[[rule]]
recipient = "grumpy-*@*"
action = "complain"
feedback_type = "abuse"
"#;

const BODY: &str = "Hello {{default name \"there\"}},\r\n\r\nThis message was sent by `mailroom demo` to a local sandbox server. It was\r\nstored in a Maildir on this machine and went nowhere else.\r\n\r\n--\r\nUnsubscribe: {{unsubscribe_url}}\r\n";

const FIRST: &[&str] = &[
    "Ann", "Bob", "Carla", "Dev", "Eva", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mara", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara",
];
const LAST: &[&str] = &[
    "Lee", "Stone", "Díaz", "Patel", "Novak", "Haddad", "Berg", "Sato", "Costa", "Weber", "Yilmaz",
    "Moreau",
];

/// The demo contacts: `(email, name)`, a few hundred over several domains.
fn contacts() -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let name = |i: usize| format!("{} {}", FIRST[i % FIRST.len()], LAST[(i / 3) % LAST.len()]);
    let mut n = 0;
    for (domain, count) in [
        ("example.com", 110),
        ("example.net", 80),
        ("example.org", 60),
        ("greylist.example", 20),
    ] {
        for i in 1..=count {
            rows.push((format!("reader{i}@{domain}"), name(n)));
            n += 1;
        }
    }
    for (local, domain, count) in [
        ("gone", "example.com", 6),
        ("reader", "full.example", 4),
        ("moved", "example.net", 3),
        ("grumpy", "example.org", 2),
    ] {
        for i in 1..=count {
            rows.push((format!("{local}-{i}@{domain}"), name(n)));
            n += 1;
        }
    }
    rows
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn campaign_toml(port: u16) -> String {
    format!(
        r#"# Written by `mailroom demo`: a campaign sent to the local sandbox server.
[campaign]
name = "mailroom-demo"
from = "Mailroom Demo <news@demo.example>"
subject = "{{{{default name \"Hello\"}}}}, this is the mailroom demo"
text = "body.txt.hbs"

[contacts]
path = "contacts.csv"

[smtp]
host = "localhost"
port = {port}
security = "starttls"
username = "demo"
password_file = "../sandbox/password"
ca_file = "../sandbox/ca.pem"
connections = 4
connect_timeout = 5
command_timeout = 10
data_timeout = 30

[rate]
# Paced so the demo shows the limiter at work and still finishes in seconds.
per_second = 100

[retry]
# Short on purpose so the demo finishes quickly; real campaigns wait minutes to hours.
backoff = ["1s", "2s", "3s"]
max_attempts = 4
max_age = "1h"

[unsubscribe]
url = "https://demo.example/unsubscribe/{{{{token}}}}"

[bounces]
return_path = "bounces+{{token}}@demo.example"
"#
    )
}

/// Writes the campaign folder; refuses to overwrite an earlier demo.
fn write_campaign(dir: &Path, port: u16) -> anyhow::Result<usize> {
    let toml_path = dir.join("campaign.toml");
    if toml_path.exists() {
        anyhow::bail!(
            "{} already exists\n\nPass an empty or new folder with --dir, or leave --dir out for a temporary one.",
            toml_path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let rows = contacts();
    let mut csv = String::from("email,name\n");
    for (email, name) in &rows {
        let _ = writeln!(csv, "{},{}", csv_field(email), csv_field(name));
    }
    for (file, text) in [
        ("campaign.toml", campaign_toml(port)),
        ("contacts.csv", csv),
        ("body.txt.hbs", BODY.to_owned()),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(rows.len())
}

/// A fresh random password for the sandbox's AUTH (hex of 16 random bytes).
fn random_password() -> anyhow::Result<String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("could not create {}", path.display()))?;
    file.write_all(secret.as_bytes())
        .with_context(|| format!("could not write {}", path.display()))
}

/// Parses `argv` with a subcommand's own clap definition, as if typed after `mailroom <name>`.
fn parse<A: clap::Args + clap::FromArgMatches>(
    name: &'static str,
    argv: &[OsString],
) -> anyhow::Result<A> {
    let command = A::augment_args(clap::Command::new(name).no_binary_name(true));
    let matches = command
        .try_get_matches_from(argv)
        .with_context(|| format!("demo: could not prepare `mailroom {name}`"))?;
    Ok(A::from_arg_matches(&matches)?)
}

fn os(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let workspace = match &args.dir {
        Some(dir) => dir.clone(),
        None => tempfile::Builder::new()
            .prefix("mailroom-demo-")
            .tempdir()
            .context("could not create a temporary folder")?
            .keep(),
    };
    let sandbox_dir = workspace.join("sandbox");
    let campaign_dir = workspace.join("campaign");
    if campaign_dir.join("campaign.toml").exists() || sandbox_dir.exists() {
        anyhow::bail!(
            "{} already holds a demo\n\nPass a new folder with --dir, or leave --dir out for a temporary one; look at the earlier demo with `mailroom report {}`.",
            workspace.display(),
            campaign_dir.display()
        );
    }
    std::fs::create_dir_all(&sandbox_dir)
        .with_context(|| format!("could not create {}", sandbox_dir.display()))?;

    // The sandbox lives on its own runtime: the subcommands below build their own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let password = random_password()?;
    let script = Script::parse(SCRIPT).context("the demo's sandbox script is invalid")?;
    let config = SandboxConfig::new(sandbox_dir.join("maildir"))
        .bounce_maildir(sandbox_dir.join("bounces"))
        .auth("demo", &password)
        .script(script);
    let sandbox = runtime.block_on(sandbox::start(config))?;
    sandbox
        .write_ca(&sandbox_dir.join("ca.pem"))
        .context("could not write the sandbox CA certificate")?;
    write_secret(&sandbox_dir.join("password"), &password)?;
    std::fs::write(sandbox_dir.join("script.toml"), SCRIPT)
        .context("could not write the sandbox script")?;
    let count = write_campaign(&campaign_dir, sandbox.addr().port())?;

    outln!("mailroom demo: workspace {}", workspace.display());
    outln!(
        "  sandbox SMTP server on {} (STARTTLS + AUTH; it stores mail, it relays nothing)",
        sandbox.addr()
    );
    outln!("  campaign: {} ({count} contacts)", campaign_dir.display());
    outln!(
        "  relay behaviour: {}",
        sandbox_dir.join("script.toml").display()
    );
    outln!();

    let result = steps(&args, &campaign_dir, &sandbox);
    runtime.block_on(sandbox.shutdown());
    let code = result?;
    outln!();
    outln!(
        "Accepted messages are files in {}",
        sandbox_dir.join("maildir/new").display()
    );
    outln!(
        "Look again any time: mailroom report {0}  (or: mailroom dashboard {0})",
        campaign_dir.display()
    );
    Ok(code)
}

fn steps(args: &Args, campaign_dir: &Path, sandbox: &sandbox::Sandbox) -> anyhow::Result<ExitCode> {
    outln!(
        "1. Sending through the sandbox: STARTTLS, AUTH, rate limit; greylisted recipients are retried after a short back-off"
    );
    if send(campaign_dir)? == Sent::Interrupted {
        outln!("Interrupted: messages in flight were finished, nothing else was sent.");
        return Ok(ExitCode::from(130));
    }

    outln!();
    outln!(
        "2. Importing the bounces and complaints the sandbox wrote to {}",
        sandbox.bounce_maildir().display()
    );
    let bounces: super::bounces::Args = parse(
        "bounces",
        &os(&[
            &"import",
            &campaign_dir,
            &"--maildir",
            &sandbox.bounce_maildir(),
        ]),
    )?;
    super::bounces::run(bounces).context("demo: the bounce import step failed")?;

    outln!();
    if !args.no_dashboard && std::io::stdout().is_terminal() {
        outln!("3. Opening the dashboard (q quits)");
        let dashboard: super::dashboard::Args = parse("dashboard", &os(&[&campaign_dir]))?;
        super::dashboard::run(dashboard)
    } else {
        outln!("3. Report");
        let report: super::report::Args = parse("report", &os(&[&campaign_dir]))?;
        super::report::run(report)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Done,
    Interrupted,
}

/// Sends the demo campaign with the library pipeline (import, ledger writer, workers, pacing,
/// retries), passes repeated until no deferred recipient is left or a pass gives up.
fn send(campaign_dir: &Path) -> anyhow::Result<Sent> {
    let campaign = Arc::new(Campaign::load(campaign_dir)?);
    let settings = setup::settings(&campaign)?;
    let mut options = setup::options(&campaign);
    options.wait = true;
    let ledger = campaign.config().store.path.clone();
    let render: Arc<dyn Render> = Arc::new(setup::CampaignRender(campaign.clone()));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let started = std::time::Instant::now();
    let shutdown = Shutdown::new();
    runtime.block_on(async {
        shutdown.install_ctrl_c(|| {
            errln!("\nstopping after the messages in flight (Ctrl-C again quits at once)");
        });
    });
    // A pass ends when nothing is due; deferred recipients come due after their back-off, so
    // another pass picks them up. The cap only guards against a relay that never relents.
    for pass in 1..=5 {
        let mut stats = setup::ContactStats::default();
        let contacts = setup::recipients(&campaign, &mut stats)?;
        let prepared = pipeline::prepare(
            &ledger,
            campaign.name(),
            contacts,
            &settings.host,
            settings.security.as_str(),
        )?;
        let counters = Arc::new(Counters::default());
        let summary = runtime.block_on(async {
            let transport = Transport::new(settings.clone()).await?;
            let progress = std::io::stdout()
                .is_terminal()
                .then(|| tokio::spawn(show_progress(counters.clone())));
            let summary = prepared
                .send(Outbound {
                    relays: transport.into(),
                    render: render.clone(),
                    options: options.clone(),
                    shutdown: shutdown.clone(),
                    counters: counters.clone(),
                    events: None,
                })
                .await;
            if let Some(progress) = progress {
                progress.abort();
                out!("\r\x1b[2K");
            }
            anyhow::Ok(summary?)
        });
        let summary = summary?;
        outln!(
            "   pass {pass} ({:.1} s): {} accepted by the relay, {} deferrals, {} hard bounces, {} soft bounces; {} still deferred",
            started.elapsed().as_secs_f64(),
            summary.state(DeliveryState::Accepted),
            summary.deferred,
            summary.state(DeliveryState::BouncedHard),
            summary.state(DeliveryState::BouncedSoft),
            summary.state(DeliveryState::Deferred),
        );
        match &summary.end {
            End::Finished => {}
            // Recipients given back after "slow down" replies: the next pass tries them.
            End::Throttled(_) => continue,
            End::Interrupted => return Ok(Sent::Interrupted),
            other => anyhow::bail!("the demo send stopped: {other:?}"),
        }
        let Some(next) = summary
            .next_retry_at
            .filter(|_| summary.state(DeliveryState::Deferred) > 0)
        else {
            break;
        };
        let wait_ms = next
            .saturating_sub(chrono::Utc::now().timestamp_millis())
            .max(0);
        let pause = std::time::Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
        runtime.block_on(async {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.wait() => {}
            }
        });
        if shutdown.is_triggered() {
            return Ok(Sent::Interrupted);
        }
    }
    Ok(Sent::Done)
}

/// A one-line counter on the terminal while a pass runs.
async fn show_progress(counters: Arc<Counters>) {
    use std::io::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tick.tick().await;
        out!(
            "\r   {} of {} done: {} accepted by the relay, {} deferred",
            counters.done(),
            counters.planned.load(Relaxed),
            counters.accepted.load(Relaxed),
            counters.deferred.load(Relaxed),
        );
        let _ = std::io::stdout().flush();
    }
}
