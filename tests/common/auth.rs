//! Authentication tests' support: the loopback DNS fixture server (`MAILROOM_TEST_DNS`, from
//! scripts/ci-servers.sh), the independent verifier (python3-dkim through Debian's
//! /usr/bin/python3 and tests/fixtures/dkim/verify.py), and campaign folders that sign with the
//! test keys of tests/fixtures/dkim/ (copied with mode 0600: git does not keep modes).

use std::path::{Path, PathBuf};
use std::process::Command;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The DNS fixture server's `IP:PORT`, or None after a loud SKIPPED (a failure under CI=true).
pub fn dns() -> Option<String> {
    if let Some(addr) = var("MAILROOM_TEST_DNS") {
        return Some(addr);
    }
    assert!(
        var("CI").as_deref() != Some("true"),
        "CI=true but MAILROOM_TEST_DNS is not set: source scripts/ci-servers.sh"
    );
    eprintln!(
        "SKIPPED: no DNS fixture server (MAILROOM_TEST_DNS unset); run `source scripts/ci-servers.sh` as root"
    );
    None
}

/// A test key's path in the repository.
pub fn key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/dkim/{name}.pem"))
}

/// Copies test key `name` to `dir/dkim/NAME.pem` with mode `mode`; returns the relative path.
pub fn install_key(dir: &Path, name: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir.join("dkim")).unwrap();
    let to = dir.join(format!("dkim/{name}.pem"));
    std::fs::copy(key(name), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    format!("dkim/{name}.pem")
}

/// Which signatures a test campaign carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    None,
    Rsa,
    Ed25519,
    /// RSA first, Ed25519 as `[dkim.second]`.
    Dual,
}

/// Which bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bodies {
    TextAndHtml,
    Markdown,
}

/// A campaign from `news@DOMAIN`, signed as `signing` with d=`dkim_domain` (selectors `rsa` and
/// `ed`, as the fixture zones publish them), resolving through `dns`. Contacts have non-ASCII
/// names; the subject is non-ASCII and long enough to be folded. `smtp` is the `[smtp]` body.
pub struct AuthCampaign {
    pub dir: tempfile::TempDir,
}

impl AuthCampaign {
    // Each argument is one axis the tests vary; a builder would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        domain: &str,
        dkim_domain: &str,
        signing: Signing,
        bodies: Bodies,
        dns: &str,
        smtp: &str,
        contacts: &[&str],
    ) -> AuthCampaign {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let dkim = match signing {
            Signing::None => String::new(),
            Signing::Rsa | Signing::Dual => {
                let k = install_key(root, "rsa2048", 0o600);
                let mut s = format!(
                    "[dkim]\ndomain = \"{dkim_domain}\"\nselector = \"rsa\"\nprivate_key_file = \"{k}\"\n"
                );
                if signing == Signing::Dual {
                    let e = install_key(root, "ed25519", 0o600);
                    s.push_str(&format!(
                        "\n[dkim.second]\nselector = \"ed\"\nprivate_key_file = \"{e}\"\n"
                    ));
                }
                s
            }
            Signing::Ed25519 => {
                let e = install_key(root, "ed25519", 0o600);
                format!(
                    "[dkim]\ndomain = \"{dkim_domain}\"\nselector = \"ed\"\nprivate_key_file = \"{e}\"\n"
                )
            }
        };
        let body = match bodies {
            Bodies::TextAndHtml => {
                std::fs::write(
                    root.join("body.txt.hbs"),
                    "Grüße {{name}},\n\nNeues aus der Bäckerei: Stollen, Lebkuchen und Kaffee.\n\nAbmelden: {{unsubscribe_url}}\n",
                )
                .unwrap();
                std::fs::write(
                    root.join("body.html.hbs"),
                    "<p>Grüße {{name}},</p><p>Neues aus der Bäckerei — Stollen &amp; Lebkuchen.</p>\n<p><a href=\"{{unsubscribe_url}}\">Abmelden</a></p>\n",
                )
                .unwrap();
                "text = \"body.txt.hbs\"\nhtml = \"body.html.hbs\""
            }
            Bodies::Markdown => {
                std::fs::write(
                    root.join("issue.md.hbs"),
                    "# Dezember in der Bäckerei\n\nHallo **{{name}}**,\n\n| Gebäck | Preis |\n|---|---|\n| Stollen | 12 € |\n\n- Lebkuchen\n- Zimtsterne\n\n[Abmelden]({{unsubscribe_url}})\n",
                )
                .unwrap();
                "markdown = \"issue.md.hbs\""
            }
        };
        let mut csv = String::from("email,name\n");
        for (i, c) in contacts.iter().enumerate() {
            csv.push_str(&format!("{c},Zoë Ünal-Øster {i}\n"));
        }
        std::fs::write(root.join("contacts.csv"), csv).unwrap();
        std::fs::write(
            root.join("campaign.toml"),
            format!(
                "[campaign]\nname = \"{name}\"\nfrom = \"Bäckerei Müller & Söhne <news@{domain}>\"\n\
                 subject = \"{{{{name}}}}: Adventsangebote der Bäckerei Müller — Stollen, Lebkuchen, Zimtsterne und Glühwein für die ganze Familie\"\n\
                 {body}\nfeedback_id = \"{{campaign}}:newsletter:mailroom\"\n\n\
                 [campaign.headers]\n\"X-Long-Note\" = \"{long}\"\n\n\
                 [contacts]\npath = \"contacts.csv\"\n\n[smtp]\n{smtp}\n\n[rate]\nper_second = 100000\n\n\
                 [unsubscribe]\nurl = \"https://{domain}/u/{{{{token}}}}\"\n\n\
                 [dns]\nresolver = \"{dns}\"\n\n{dkim}",
                long = "word ".repeat(40).trim_end(),
            ),
        )
        .unwrap();
        AuthCampaign { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn edit(&self, from: &str, to: &str) -> &AuthCampaign {
        let p = self.path().join("campaign.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains(from),
            "{from:?} not in campaign.toml:\n{text}"
        );
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
        self
    }
}

/// `mailroom ARGS` with stdout, stderr and the exit code.
pub fn mailroom(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .env_remove("MAILROOM_LOG")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// Verifies every signature of `message` with python3-dkim against `dns`; returns whether all
/// passed and the verifier's lines.
pub fn python_verify(dns: &str, message: &[u8]) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dkim/verify.py");
    // Debian's python3: another one earlier on PATH may lack the dkim and nacl modules.
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(dns)
        .arg(file.path())
        .output()
        .expect("/usr/bin/python3 with python3-dkim (scripts/ci-servers.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
