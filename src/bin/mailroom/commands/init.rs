//! `mailroom init DIR`: writes the example campaign embedded from `templates/` into DIR.
//! Never overwrites a file: if any target exists, nothing is written.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

/// Arguments of `mailroom init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to create the campaign in (created if missing).
    pub dir: PathBuf,
}

/// The example campaign, relative path → contents.
const FILES: &[(&str, &str)] = &[
    (
        "campaign.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/campaign.toml"
        )),
    ),
    (
        "contacts.csv",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/contacts.csv"
        )),
    ),
    (
        "body.txt.hbs",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/body.txt.hbs"
        )),
    ),
    (
        "body.html.hbs",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/body.html.hbs"
        )),
    ),
    (
        "partials/footer.hbs",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/partials/footer.hbs"
        )),
    ),
    (
        "partials/footer_html.hbs",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/partials/footer_html.hbs"
        )),
    ),
];

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    let existing: Vec<String> = FILES
        .iter()
        .map(|(rel, _)| dir.join(rel))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        anyhow::bail!(
            "refusing to overwrite existing files: {}\n\nChoose a new or empty folder, or move those files away.",
            existing.join(", ")
        );
    }
    for (rel, contents) in FILES {
        write_new(&dir.join(rel), contents)?;
        outln!("created {}", dir.join(rel).display());
    }
    let d = shell_word(dir);
    outln!(
        "\nNext:\n  1. edit {d}/campaign.toml (from, [smtp], [unsubscribe]) and {d}/contacts.csv\n  2. mailroom check {d}\n  3. mailroom preview {d} --limit 1"
    );
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create folder {}", parent.display()))?;
    }
    // create_new: a file that appeared since the check above is still not overwritten.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
