//! `mailroom dkim keygen --domain D --selector S [--algorithm ed25519|rsa2048] --out FILE`: makes
//! a DKIM key pair, writes the private key (PKCS#8 PEM, mode 0600, never over an existing file)
//! and prints the TXT record to publish and the `[dkim]` lines for campaign.toml. The private
//! key is written, never printed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use mailroom::dkim::{self, Algorithm};

/// Arguments of `mailroom dkim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a key pair: write the private key and print the TXT record to publish.
    Keygen(Keygen),
}

/// Arguments of `mailroom dkim keygen`.
#[derive(Debug, clap::Args)]
pub struct Keygen {
    /// The signing domain (d=), usually the From domain.
    #[arg(long)]
    pub domain: String,
    /// The selector (s=): the record goes at SELECTOR._domainkey.DOMAIN.
    #[arg(long)]
    pub selector: String,
    /// ed25519 (RFC 8463; small, fast) or rsa2048 (understood everywhere). Sign with both for
    /// the widest support: run keygen twice and add [dkim.second].
    #[arg(long, value_enum, default_value = "ed25519")]
    pub algorithm: Algorithm,
    /// Where to write the private key (refused if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Command::Keygen(k) = args.command;
    let domain = k.domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    if !labels_ok(&domain) || !domain.contains('.') {
        bail!(
            "--domain {:?} is not a domain name\n\nPass the domain that will publish the key, e.g. --domain example.com.",
            k.domain
        );
    }
    if !labels_ok(&k.selector) {
        bail!(
            "--selector {:?} is not a DKIM selector\n\nUse letters, digits, - and _, e.g. --selector mail2026.",
            k.selector
        );
    }
    if k.out.exists() {
        bail!(
            "{} already exists; refusing to overwrite a key\n\nChoose another --out, or move the old key away first.",
            k.out.display()
        );
    }
    let generated = dkim::generate(k.algorithm)?;
    write_private(&k.out, generated.pem.as_bytes())?;
    let record = generated.key.record(&domain, &k.selector);
    outln!(
        "Wrote the private key to {} (mode 0600; keep it secret).",
        k.out.display()
    );
    outln!();
    outln!(
        "Publish this TXT record (zone-file syntax; long values are split into 255-byte strings):"
    );
    outln!();
    outln!("{}", record.zone_line());
    outln!();
    outln!("Then add to campaign.toml:");
    outln!();
    outln!("[dkim]");
    outln!("domain = \"{domain}\"");
    outln!("selector = \"{}\"", k.selector);
    outln!("private_key_file = \"{}\"", k.out.display());
    outln!();
    outln!("and check it once the record is visible: mailroom doctor CAMPAIGN --dns");
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with mode 0600 from the start (never readable by others, not even briefly).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
