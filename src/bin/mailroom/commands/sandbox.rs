//! `mailroom sandbox`: runs the embedded SMTP test server until Ctrl-C, printing where it listens
//! and which CA certificate clients must trust. Wiring and printing only; the server is
//! `mailroom::sandbox`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use mailroom::sandbox::{self, SandboxConfig, Script};

/// Arguments of `mailroom sandbox` (boxed: they would make every `Command` variant large).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    options: Box<Options>,
}

#[derive(Debug, clap::Args)]
struct Options {
    /// Address of the STARTTLS listener (port 587 style).
    #[arg(long, default_value = "127.0.0.1:2587")]
    listen: SocketAddr,
    /// Also listen with implicit TLS (port 465 style) on this address.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// Maildir for accepted messages (created if missing).
    #[arg(long, value_name = "DIR", default_value = "sandbox/maildir")]
    maildir: PathBuf,
    /// Maildir for scripted bounces and complaints [default: `bounces` next to --maildir].
    #[arg(long, value_name = "DIR")]
    bounce_maildir: Option<PathBuf>,
    /// TOML script of replies and faults (see docs/sandbox.md); default: accept everything.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Require AUTH (offered after STARTTLS) with this user name.
    #[arg(long, requires = "password_env")]
    user: Option<String>,
    /// Name of the environment variable holding the AUTH password.
    #[arg(long, value_name = "VAR", requires = "user")]
    password_env: Option<String>,
    /// Name of the environment variable holding an OAuth2 access token that AUTH XOAUTH2
    /// accepts for --user (a wrong one is refused as Gmail refuses it).
    #[arg(long, value_name = "VAR", requires = "user")]
    xoauth2_token_env: Option<String>,
    /// Where to write the generated CA certificate [default: `sandbox-ca.pem` next to --maildir].
    #[arg(long, value_name = "FILE")]
    ca_out: Option<PathBuf>,
    /// Do not offer TLS at all (AUTH is then never offered either).
    #[arg(long)]
    no_tls: bool,
    /// Allow listening on a non-loopback address (the sandbox accepts mail from anyone).
    #[arg(long)]
    allow_remote: bool,
}

/// The largest sandbox script read (a script is a few rules; a wrong path such as `/dev/zero`
/// must not be read without end).
const MAX_SCRIPT: u64 = 1 << 20;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let args = *args.options;
    let script = match &args.script {
        Some(path) => {
            let bytes = mailroom::bounded::read_file(path, MAX_SCRIPT)
                .with_context(|| format!("could not read the sandbox script {}", path.display()))?
                .with_context(|| {
                    format!(
                        "the sandbox script {} is larger than 1 MiB, which no script needs",
                        path.display()
                    )
                })?;
            let text = mailroom::campaign::utf8_text(path, bytes).map_err(anyhow::Error::msg)?;
            Script::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Script::accept_all(),
    };
    let mut config = SandboxConfig::new(&args.maildir)
        .listen(args.listen)
        .tls(!args.no_tls)
        .script(script);
    config.tls_listen = args.tls_listen;
    config.allow_remote = args.allow_remote;
    config.bounce_maildir = args.bounce_maildir.clone();
    if args.no_tls && args.user.is_some() {
        anyhow::bail!(
            "--user needs TLS: AUTH is only offered after STARTTLS\n\nDrop --no-tls, or drop --user and --password-env."
        );
    }
    if let (Some(user), Some(var)) = (&args.user, &args.password_env) {
        // The fix text comes last: no `context` here, or the cause would print after it.
        let password = std::env::var(var).map_err(|_| {
            anyhow::anyhow!(
                "the environment variable {var} (--password-env) is not set\n\nExport it first, e.g. `export {var}=...`."
            )
        })?;
        config = config.auth(user, &password);
    }
    if let Some(var) = &args.xoauth2_token_env {
        let token = std::env::var(var).map_err(|_| {
            anyhow::anyhow!(
                "the environment variable {var} (--xoauth2-token-env) is not set\n\nExport it first, e.g. `export {var}=...`."
            )
        })?;
        config = config.xoauth2_token(&token);
    }
    let ca_path = args.ca_out.clone().unwrap_or_else(|| {
        args.maildir
            .parent()
            .map(|p| p.join("sandbox-ca.pem"))
            .unwrap_or_else(|| PathBuf::from("sandbox-ca.pem"))
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        let sandbox = sandbox::start(config).await?;
        sandbox
            .write_ca(&ca_path)
            .with_context(|| format!("could not write the CA certificate to {}", ca_path.display()))?;
        let tls = if args.no_tls { "plaintext, no TLS" } else { "STARTTLS" };
        outln!("mailroom sandbox listening on {} ({tls})", sandbox.addr());
        if let Some(addr) = sandbox.tls_addr() {
            outln!("  implicit TLS on {addr}");
        }
        if !args.no_tls {
            outln!(
                "  CA certificate: {} (clients verify the server against it; names localhost, 127.0.0.1)",
                ca_path.display()
            );
        }
        match (&args.user, &args.password_env) {
            (Some(user), Some(var)) => {
                outln!("  AUTH PLAIN/LOGIN after TLS: user {user}, password from ${var}");
                if let Some(token_var) = &args.xoauth2_token_env {
                    outln!("  AUTH XOAUTH2 after TLS: user {user}, token from ${token_var}");
                }
            }
            _ => outln!("  no AUTH required"),
        }
        outln!("  accepted messages: {}", sandbox.maildir().display());
        outln!("  scripted bounces and complaints: {}", sandbox.bounce_maildir().display());
        outln!("Messages are stored, never relayed (run with -v to log each one). Press Ctrl-C to stop.");
        tokio::signal::ctrl_c()
            .await
            .context("could not wait for Ctrl-C")?;
        sandbox.shutdown().await;
        outln!("mailroom sandbox stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
