//! `mailroom doctor [CAMPAIGN | HOST]`: probes the relay's ports and prints which port and security
//! to use. CAMPAIGN (an existing path) supplies host, port, credentials and ca_file; otherwise the
//! argument is a host name. A campaign with `[[relay]]` tables has every relay probed, one report
//! each. Exit 0 when a port is usable securely (of every relay), 1 when not, 2 on errors.
//!
//! `mailroom doctor CAMPAIGN --dns` runs the DNS preflight instead (no port probing): exit 0
//! every checkable rule met, 1 a rule not met, 2 a lookup got no answer. `mailroom doctor
//! --inspect FILE.eml` reads a received copy (no campaign, no network), with the same exits
//! 0 and 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use mailroom::campaign::Campaign;
use mailroom::campaign::config::parse_resolver;
use mailroom::doctor::{self, Credentials, DEFAULT_IMPLICIT_PORTS, DEFAULT_PORTS, Login, Options};
use mailroom::pipeline::secrets;

/// Arguments of `mailroom doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A campaign folder (or its campaign.toml), or a host name / IP address to probe.
    #[arg(required_unless_present = "inspect")]
    pub target: Option<String>,
    /// Run the DNS preflight for CAMPAIGN instead of probing ports: SPF, DKIM, DMARC, MX and
    /// the Gmail / Yahoo / Microsoft bulk-sender rules.
    #[arg(long, conflicts_with_all = ["ports", "auth", "user", "ca_file"])]
    pub dns: bool,
    /// The DNS resolver to ask (IP or IP:PORT) instead of [dns] resolver or the system's.
    #[arg(long, value_name = "HOST:PORT", requires = "dns")]
    pub resolver: Option<String>,
    /// Report the authentication results and TLS hops of a message as a mailbox received it
    /// (e.g. Gmail's "Show original" download). Needs no campaign and no network.
    #[arg(long, value_name = "FILE.eml", conflicts_with_all = ["target", "dns", "ports", "auth", "user", "ca_file"])]
    pub inspect: Option<PathBuf>,
    /// Ports to probe, comma-separated [default: the campaign's port and fallbacks, then 587,465,2525,25].
    #[arg(long, value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// PEM file with extra CA certificates to trust (besides the system's).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Try AUTH (over verified TLS only; never sends mail). Password: the campaign's password_env
    /// or password_file, or env MAILROOM_SMTP_PASSWORD for a HOST.
    #[arg(long)]
    pub auth: bool,
    /// Username for --auth with a HOST (a campaign's username is used otherwise).
    #[arg(long)]
    pub user: Option<String>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Seconds allowed for each step (connect, each reply, the TLS handshake).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
}

/// The environment variable holding the password in HOST mode.
const PASSWORD_ENV: &str = "MAILROOM_SMTP_PASSWORD";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(file) = &args.inspect {
        return inspect(file, args.json);
    }
    if args.dns {
        return dns(&args);
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 3600.0) {
        bail!(
            "--timeout {} is not a number of seconds between 0 and 3600\n\nPass e.g. --timeout 10.",
            args.timeout
        );
    }
    if args.ports.contains(&0) {
        bail!("--ports: 0 is not a port\n\nPass ports between 1 and 65535, e.g. --ports 587,465.");
    }
    let targets = options(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut usable = true;
    let mut reports = Vec::new();
    for (relay, options) in targets {
        let report = runtime.block_on(doctor::run(&options))?;
        usable &= report.usable();
        reports.push((relay, report));
    }
    match reports.as_slice() {
        [(None, report)] if args.json => outln!("{}", serde_json::to_string_pretty(report)?),
        [(None, report)] => out!("{}", report.to_text()),
        several if args.json => {
            let list: Vec<serde_json::Value> = several
                .iter()
                .map(|(relay, report)| serde_json::json!({ "relay": relay, "report": report }))
                .collect();
            outln!("{}", serde_json::to_string_pretty(&list)?);
        }
        several => {
            for (relay, report) in several {
                let name = relay.as_deref().map(mailroom::display::one_line);
                outln!("== relay {} ==", name.unwrap_or_default());
                out!("{}", report.to_text());
                outln!();
            }
        }
    }
    Ok(if usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The largest received copy read: a message with attachments; only its header is used.
const MAX_INSPECT: u64 = 64 << 20;

fn inspect(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_INSPECT).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", file.display()))?;
    if !doctor::inspect::looks_like_a_message(&bytes) {
        bail!(
            "{} is not an email message: it does not start with header fields (From:, \
             Received:, ...)\n\nSave the copy as the mailbox received it, headers included: in \
             Gmail, open the message, then More (⋮) → Show original → Download original; in \
             Outlook or Thunderbird, save it as an .eml file.",
            file.display()
        );
    }
    let report = doctor::inspect::inspect(&bytes);
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", report.to_text());
    }
    Ok(ExitCode::from(report.exit_code))
}

fn dns(args: &Args) -> anyhow::Result<ExitCode> {
    let target = args.target.as_deref().unwrap_or_default();
    let path = Path::new(target);
    if !path.exists() {
        bail!(
            "--dns needs a campaign folder, and {target:?} is not one\n\nPass the folder holding campaign.toml (the preflight checks its From, envelope and DKIM domains)."
        );
    }
    let campaign = Campaign::load(path)?;
    let address = resolver_address(&campaign, args.resolver.as_deref())?;
    let options = doctor::dns::Options {
        from_domain: campaign.from_domain().to_owned(),
        envelope_domain: campaign.envelope_domain(),
        relay_host: (campaign.config().relay.first())
            .unwrap_or(&campaign.config().smtp)
            .host
            .clone(),
        one_click_unsubscribe: campaign.config().unsubscribe.is_some(),
        visible_unsubscribe_link: campaign.has_visible_unsubscribe_link(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // hickory's resolver binds to the runtime it is built in.
    let resolver = {
        let _in_runtime = runtime.enter();
        mailroom::dns::Resolver::open(address, mailroom::dns::DEFAULT_TIMEOUT)?
    };
    let report = runtime.block_on(doctor::dns::run(&resolver, &options, campaign.signer()));
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", report.to_text());
    }
    Ok(ExitCode::from(report.exit_code))
}

/// Where `--resolver` or `[dns] resolver` point, checked (shared by `send` and `doctor --dns`).
pub fn resolver_address(
    campaign: &Campaign,
    flag: Option<&str>,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    match flag.or(campaign.config().dns.resolver.as_deref()) {
        None => Ok(None),
        Some(r) => match parse_resolver(r) {
            Some(addr) => Ok(Some(addr)),
            None => bail!(
                "--resolver {r:?} is not an IP address with an optional port\n\nPass e.g. --resolver 127.0.0.1:5353 (an address: the resolver cannot look itself up)."
            ),
        },
    }
}

/// What to probe: one target, or (a campaign with `[[relay]]` tables) each relay by name.
fn options(args: &Args) -> anyhow::Result<Vec<(Option<String>, Options)>> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let target = args.target.as_deref().unwrap_or_default();
    let path = Path::new(target);
    if path.exists() {
        let campaign = Campaign::load(path)?;
        let config = campaign.config();
        if config.relay.is_empty() {
            return Ok(vec![(
                None,
                campaign_options(args, &campaign, &config.smtp, timeout)?,
            )]);
        }
        return config
            .relay
            .iter()
            .map(|relay| {
                let options = campaign_options(args, &campaign, relay, timeout);
                options.map(|o| (relay.name.clone(), o))
            })
            .collect();
    }
    let host = target.trim();
    if host.is_empty() || host.contains(['/', ' ']) {
        bail!(
            "{:?} is neither an existing campaign folder nor a host name\n\nPass a campaign folder (holding campaign.toml) or a host such as smtp.example.com.",
            target
        );
    }
    let credentials = if args.auth {
        let Some(username) = args.user.clone() else {
            bail!(
                "--auth with a HOST needs --user\n\nPass --user you@example.com and export {PASSWORD_ENV}."
            );
        };
        let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
        let Some(password) = password else {
            bail!(
                "--auth needs the password in the environment variable {PASSWORD_ENV}\n\nExport it first (never pass a password as an argument)."
            );
        };
        Some(Credentials {
            username,
            login: Login::Password(mailroom::transport::Secret::new(password)),
        })
    } else {
        None
    };
    Ok(vec![(
        None,
        Options {
            host: host.to_owned(),
            ports: if args.ports.is_empty() {
                DEFAULT_PORTS.to_vec()
            } else {
                dedup(args.ports.clone())
            },
            ca_file: args.ca_file.clone(),
            timeout,
            hello_name: None,
            credentials,
            configured_port: None,
            configured_security: None,
            implicit_ports: DEFAULT_IMPLICIT_PORTS.to_vec(),
        },
    )])
}

/// The probe of one relay table of a campaign (`[smtp]` or a `[[relay]]`).
fn campaign_options(
    args: &Args,
    campaign: &Campaign,
    smtp: &mailroom::campaign::config::SmtpConfig,
    timeout: Duration,
) -> anyhow::Result<Options> {
    if smtp.host.trim().is_empty() {
        bail!(
            "{}: [smtp] host is not set\n\nAdd host = \"smtp.example.com\" to the [smtp] section, or run `mailroom doctor HOST`.",
            campaign.config_path().display()
        );
    }
    let ports = if args.ports.is_empty() {
        let mut ports = vec![smtp.port];
        ports.extend(&smtp.fallback_ports);
        ports.extend(DEFAULT_PORTS);
        dedup(ports)
    } else {
        dedup(args.ports.clone())
    };
    let credentials = if args.auth {
        let username = args.user.clone().or_else(|| smtp.username.clone());
        let Some(username) = username else {
            bail!(
                "--auth: {} has no [smtp] username\n\nAdd username = \"…\" to [smtp], or pass --user.",
                campaign.config_path().display()
            );
        };
        let config = campaign.config_path();
        let login = if let Some(tokens) =
            secrets::tokens(smtp, config, mailroom::oauth::Purpose::Smtp).context("--auth")?
        {
            Login::XOAuth2(tokens)
        } else {
            match secrets::password(smtp, config).context("--auth")? {
                Some(password) => Login::Password(password),
                None => bail!(
                    "--auth: {} sets neither password_env nor password_file\n\nAdd password_env = \"MAILROOM_SMTP_PASSWORD\" to [smtp] and export that variable.",
                    config.display()
                ),
            }
        };
        Some(Credentials { username, login })
    } else {
        None
    };
    Ok(Options {
        host: smtp.host.clone(),
        ports,
        ca_file: args.ca_file.clone().or_else(|| smtp.ca_file.clone()),
        timeout,
        hello_name: smtp.hello_name.clone(),
        credentials,
        configured_port: Some(smtp.port),
        configured_security: Some(smtp.security),
        implicit_ports: implicit_ports(smtp),
    })
}

/// Keeps the first occurrence of each port, in order.
fn dedup(ports: Vec<u16>) -> Vec<u16> {
    let mut seen = Vec::with_capacity(ports.len());
    for p in ports {
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    seen
}

/// 465 always; the configured port too when the campaign says it speaks implicit TLS.
fn implicit_ports(smtp: &mailroom::campaign::config::SmtpConfig) -> Vec<u16> {
    let mut ports = DEFAULT_IMPLICIT_PORTS.to_vec();
    if smtp.security == mailroom::campaign::config::Security::Tls && !ports.contains(&smtp.port) {
        ports.push(smtp.port);
    }
    ports
}
