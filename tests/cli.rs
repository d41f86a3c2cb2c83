//! What users read, pinned by insta snapshots (tests/snapshots/cli__*.snap) so that a change to
//! it shows in review: the `--help` of `mailroom` and of every subcommand (found by walking the
//! help itself, so a new command gets a snapshot of its own), and the errors a user can fix, each
//! caused through the real binary on a small campaign or ledger in a temporary folder. The folder
//! reads `[DIR]`, this process's pid `[PID]` and a relay's port `[PORT]`, so snapshots do not
//! depend on the machine or the run; nothing here waits on a clock. The errors of
//! `mailroom check` are pinned in tests/campaign.rs. Last, what happens when standard output
//! cannot be written: a reader gone (`| head`) ends the output quietly, a full disk is reported.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::ledger::LedgerBuilder;
use common::relay::Relay;
use common::write_campaign;

/// `mailroom ARGS` run in `dir` with only `env` in its environment (no password variable leaks
/// in, and clap shows no `[env: ...]` values) and no terminal on stdin.
fn mailroom(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `text` without what changes from run to run: the duration and speed of a send, the size of a
/// rendered message (its Date header is as long as the day of the month).
fn steady(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let cut = [" SMTP transactions in ", "message size "]
            .iter()
            .find_map(|marker| line.find(marker).map(|i| i + marker.len()));
        match cut {
            Some(i) => out.push_str(&format!("{}[VARIES]", &line[..i])),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The command line, its exit code and what it printed, with `dir` written `[DIR]` and what
/// varies between runs left out ([`steady`]).
fn transcript(dir: &Path, args: &[&str], out: &Output) -> String {
    let mut text = format!(
        "$ mailroom {}\nexit: {}\n",
        args.join(" "),
        out.status
            .code()
            .map_or("signal".to_owned(), |c| c.to_string())
    );
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if !bytes.is_empty() {
            text.push_str(&format!("--- {name}\n{}", String::from_utf8_lossy(bytes)));
        }
    }
    steady(&common::redact_dir(&text, dir))
}

// ---- --help of every command ----

/// The subcommands listed under "Commands:" in a help text (clap's own `help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_of_every_command_and_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = Vec::new();
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = mailroom(dir.path(), &args, &[]);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        for sub in subcommands(&help) {
            todo.push([path.clone(), vec![sub]].concat());
        }
        let name = if path.is_empty() {
            "help".to_owned()
        } else {
            format!("help_{}", path.join("_"))
        };
        insta::assert_snapshot!(name, help);
        seen.push(path.join(" "));
    }
    // The walk must reach the nested commands, or it proves nothing about them.
    for nested in [
        "bounces import",
        "bounces parse",
        "suppress add",
        "suppress list",
    ] {
        assert!(
            seen.iter().any(|s| s == nested),
            "{nested} not reached: {seen:?}"
        );
    }
}

// ---- Errors a user can fix ----

/// A plaintext `[smtp]` table for a relay on the loopback that is never reached.
const LOOPBACK: &str = "host = \"127.0.0.1\"\nport = 9\nsecurity = \"none\"";

/// A STARTTLS `[smtp]` table with a user, `extra` lines added.
fn with_user(extra: &str) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = 9\nsecurity = \"starttls\"\nusername = \"news@example.test\"\n{extra}"
    )
}

/// A campaign folder `c` with one contact and the `[smtp]` table `smtp`.
fn campaign(dir: &Path, smtp: &str) {
    write_campaign(
        dir,
        "c",
        "news@sender.test",
        smtp,
        &["a@example.test".to_owned()],
    );
}

/// A ledger at `path` holding one recipient of campaign `name`.
fn ledger(path: &Path, name: &str) {
    let mut b = LedgerBuilder::new(path);
    let id = b.campaign(name, 0);
    b.recipient(id, "a@example.test");
}

/// Campaign `c` (plaintext to the loopback) with a ledger that has it.
fn sent(dir: &Path) {
    campaign(dir, LOOPBACK);
    ledger(&dir.join("c/mailroom.db"), "c");
}

/// A command that fails in a way its user can fix.
struct Failing {
    /// Builds what the command reads, in the test's folder.
    setup: fn(&Path),
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    /// The exit code: 2 when the job could not be done, 1 when it finished with problems.
    code: i32,
}

impl Default for Failing {
    fn default() -> Self {
        Failing {
            setup: |_| {},
            args: &[],
            env: &[],
            code: 2,
        }
    }
}

fn failing(name: &str, case: Failing) {
    let dir = tempfile::tempdir().unwrap();
    (case.setup)(dir.path());
    let out = mailroom(dir.path(), case.args, case.env);
    let text = transcript(dir.path(), case.args, &out);
    assert_eq!(out.status.code(), Some(case.code), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    insta::assert_snapshot!(name, text);
}

macro_rules! failing {
    ($($name:ident: $case:expr;)*) => {$(
        #[test]
        fn $name() {
            failing(stringify!($name), $case);
        }
    )*};
}

failing! {
    no_command_shows_the_usage: Failing { ..Failing::default() };
    a_misspelt_command_gets_a_suggestion: Failing { args: &["sned"], ..Failing::default() };

    send_off_a_terminal_needs_yes: Failing {
        setup: |d| campaign(d, LOOPBACK),
        args: &["send", "c"],
        ..Failing::default()
    };
    send_dashboard_needs_a_terminal: Failing {
        setup: |d| campaign(d, LOOPBACK),
        args: &["send", "c", "--yes", "--dashboard"],
        ..Failing::default()
    };
    send_without_a_relay_host: Failing {
        setup: |d| campaign(d, ""),
        args: &["send", "c", "--yes"],
        ..Failing::default()
    };
    send_with_the_password_variable_unset: Failing {
        setup: |d| campaign(d, &with_user("password_env = \"MAILROOM_TEST_UNSET\"")),
        args: &["send", "c", "--yes"],
        ..Failing::default()
    };
    send_with_a_user_and_no_password_source: Failing {
        setup: |d| campaign(d, &with_user("")),
        args: &["send", "c", "--yes"],
        ..Failing::default()
    };
    send_with_an_unreadable_password_file: Failing {
        setup: |d| campaign(d, &with_user("password_file = \"no-such-secret\"")),
        args: &["send", "c", "--yes"],
        ..Failing::default()
    };
    send_in_plaintext_to_a_remote_relay: Failing {
        setup: |d| campaign(d, "host = \"192.0.2.1\"\nport = 25\nsecurity = \"none\""),
        args: &["send", "c", "--yes"],
        ..Failing::default()
    };
    send_authenticating_without_tls: Failing {
        setup: |d| {
            campaign(d, &format!("{LOOPBACK}\nusername = \"u\"\npassword_env = \"MAILROOM_TEST_PASSWORD\""))
        },
        args: &["send", "c", "--yes"],
        env: &[("MAILROOM_TEST_PASSWORD", "secret")],
        ..Failing::default()
    };
    send_with_a_missing_ca_file: Failing {
        setup: |d| {
            campaign(d, "host = \"localhost\"\nport = 9\nsecurity = \"starttls\"\nca_file = \"no-such-ca.pem\"")
        },
        args: &["send", "c", "--yes"],
        ..Failing::default()
    };

    report_before_any_send: Failing {
        setup: |d| campaign(d, LOOPBACK),
        args: &["report", "c"],
        ..Failing::default()
    };
    report_of_a_missing_ledger_file: Failing {
        args: &["report", "--db", "nowhere.db"],
        ..Failing::default()
    };
    report_of_a_ledger_from_a_newer_mailroom: Failing {
        setup: |d| {
            drop(mailroom::store::open(&d.join("new.db")).unwrap());
            let conn = rusqlite::Connection::open(d.join("new.db")).unwrap();
            conn.pragma_update(None, "user_version", 9999).unwrap();
        },
        args: &["report", "--db", "new.db"],
        ..Failing::default()
    };
    report_of_a_file_that_is_not_a_ledger: Failing {
        setup: |d| {
            let conn = rusqlite::Connection::open(d.join("notes.db")).unwrap();
            conn.execute_batch("CREATE TABLE notes (body TEXT);").unwrap();
        },
        args: &["report", "--db", "notes.db"],
        ..Failing::default()
    };
    report_of_a_ledger_that_needs_an_upgrade: Failing {
        setup: |d| {
            drop(mailroom::store::open(&d.join("old.db")).unwrap());
            let conn = rusqlite::Connection::open(d.join("old.db")).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        },
        args: &["report", "--db", "old.db"],
        ..Failing::default()
    };
    report_of_a_campaign_not_in_the_ledger: Failing {
        setup: |d| ledger(&d.join("l.db"), "spring"),
        args: &["report", "--db", "l.db", "--campaign", "autumn"],
        ..Failing::default()
    };

    dashboard_threshold_that_is_not_a_percentage: Failing {
        setup: |d| ledger(&d.join("l.db"), "spring"),
        args: &["dashboard", "--db", "l.db", "--bounce-warn", "150"],
        ..Failing::default()
    };
    dashboard_needs_a_terminal: Failing {
        setup: |d| ledger(&d.join("l.db"), "spring"),
        args: &["dashboard", "--db", "l.db"],
        ..Failing::default()
    };

    doctor_timeout_out_of_range: Failing {
        args: &["doctor", "localhost", "--timeout", "0"],
        ..Failing::default()
    };
    doctor_port_zero: Failing {
        args: &["doctor", "localhost", "--ports", "0"],
        ..Failing::default()
    };
    doctor_target_neither_a_folder_nor_a_host: Failing {
        args: &["doctor", "no/such/folder"],
        ..Failing::default()
    };
    doctor_auth_with_a_host_needs_a_user: Failing {
        args: &["doctor", "localhost", "--auth"],
        ..Failing::default()
    };
    doctor_auth_with_a_host_needs_the_password_variable: Failing {
        args: &["doctor", "localhost", "--auth", "--user", "news@example.test"],
        ..Failing::default()
    };
    doctor_campaign_without_a_host: Failing {
        setup: |d| campaign(d, ""),
        args: &["doctor", "c"],
        ..Failing::default()
    };
    doctor_auth_campaign_without_a_user: Failing {
        setup: |d| campaign(d, LOOPBACK),
        args: &["doctor", "c", "--auth"],
        ..Failing::default()
    };
    doctor_auth_campaign_without_a_password_source: Failing {
        setup: |d| campaign(d, &with_user("")),
        args: &["doctor", "c", "--auth"],
        ..Failing::default()
    };
    doctor_auth_campaign_with_the_password_variable_unset: Failing {
        setup: |d| campaign(d, &with_user("password_env = \"MAILROOM_TEST_UNSET\"")),
        args: &["doctor", "c", "--auth"],
        ..Failing::default()
    };

    suppress_without_a_ledger: Failing {
        args: &["suppress", "list"],
        ..Failing::default()
    };
    suppress_list_of_a_missing_ledger: Failing {
        args: &["suppress", "--db", "nowhere.db", "list"],
        ..Failing::default()
    };
    suppress_add_of_something_that_is_not_an_address: Failing {
        setup: |d| ledger(&d.join("l.db"), "spring"),
        args: &["suppress", "--db", "l.db", "add", "nobody"],
        code: 1,
        ..Failing::default()
    };
    suppress_add_with_an_unknown_reason: Failing {
        setup: |d| ledger(&d.join("l.db"), "spring"),
        args: &["suppress", "--db", "l.db", "add", "a@example.test", "--reason", "spam"],
        ..Failing::default()
    };
    suppress_remove_of_an_address_not_on_the_list: Failing {
        setup: |d| ledger(&d.join("l.db"), "spring"),
        args: &["suppress", "--db", "l.db", "remove", "a@example.test"],
        code: 1,
        ..Failing::default()
    };
    suppress_import_of_a_missing_file: Failing {
        setup: |d| ledger(&d.join("l.db"), "spring"),
        args: &["suppress", "--db", "l.db", "import", "nope.csv"],
        ..Failing::default()
    };

    bounces_import_needs_a_mailbox: Failing {
        setup: |d| campaign(d, LOOPBACK),
        args: &["bounces", "import", "c"],
        ..Failing::default()
    };
    bounces_import_before_any_send: Failing {
        setup: |d| campaign(d, LOOPBACK),
        args: &["bounces", "import", "c", "--maildir", "c"],
        ..Failing::default()
    };
    bounces_import_of_a_folder_that_is_not_a_maildir: Failing {
        setup: sent,
        args: &["bounces", "import", "c", "--maildir", "c"],
        ..Failing::default()
    };
    bounces_import_into_a_ledger_without_the_campaign: Failing {
        setup: |d| {
            campaign(d, LOOPBACK);
            ledger(&d.join("c/mailroom.db"), "another");
        },
        args: &["bounces", "import", "c", "--maildir", "c"],
        ..Failing::default()
    };
    bounces_import_from_imap_without_the_password: Failing {
        setup: sent,
        args: &["bounces", "import", "c", "--imap", "imaps://bounces@localhost/INBOX"],
        ..Failing::default()
    };
    bounces_import_from_a_bad_imap_url: Failing {
        setup: sent,
        args: &["bounces", "import", "c", "--imap", "pop3://bounces@localhost/INBOX"],
        env: &[("MAILROOM_IMAP_PASSWORD", "secret")],
        ..Failing::default()
    };
    bounces_parse_of_a_missing_file: Failing {
        args: &["bounces", "parse", "nope.eml"],
        code: 1,
        ..Failing::default()
    };

    init_refuses_to_overwrite_a_campaign: Failing {
        setup: |d| campaign(d, LOOPBACK),
        args: &["init", "c"],
        ..Failing::default()
    };
    preview_to_an_invalid_address: Failing {
        setup: |d| campaign(d, LOOPBACK),
        args: &["preview", "c", "--to", "nobody"],
        ..Failing::default()
    };

    sandbox_with_a_missing_script: Failing {
        args: &["sandbox", "--listen", "127.0.0.1:0", "--script", "nope.toml"],
        ..Failing::default()
    };
    sandbox_with_a_script_that_is_not_toml: Failing {
        setup: |d| std::fs::write(d.join("s.toml"), "[[rule]\n").unwrap(),
        args: &["sandbox", "--listen", "127.0.0.1:0", "--script", "s.toml"],
        ..Failing::default()
    };
    sandbox_with_an_unknown_action: Failing {
        setup: |d| {
            std::fs::write(d.join("s.toml"), "[[rule]]\nrecipient = \"*@x.test\"\naction = \"explode\"\n")
                .unwrap()
        },
        args: &["sandbox", "--listen", "127.0.0.1:0", "--script", "s.toml"],
        ..Failing::default()
    };
    sandbox_with_a_fault_key_missing_its_partner: Failing {
        setup: |d| std::fs::write(d.join("s.toml"), "[session]\ninject_sessions = 1\n").unwrap(),
        args: &["sandbox", "--listen", "127.0.0.1:0", "--script", "s.toml"],
        ..Failing::default()
    };
    sandbox_auth_without_tls: Failing {
        args: &["sandbox", "--listen", "127.0.0.1:0", "--no-tls", "--user", "u", "--password-env", "P"],
        ..Failing::default()
    };
    sandbox_with_the_password_variable_unset: Failing {
        args: &["sandbox", "--listen", "127.0.0.1:0", "--user", "u", "--password-env", "MAILROOM_TEST_UNSET"],
        ..Failing::default()
    };
    sandbox_on_a_public_address: Failing {
        args: &["sandbox", "--listen", "0.0.0.0:0", "--maildir", "m"],
        ..Failing::default()
    };
}

#[test]
fn send_while_another_send_holds_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    campaign(dir.path(), LOOPBACK);
    // This process takes the lock a running send takes.
    let held = mailroom::store::RunLock::acquire(&dir.path().join("c/mailroom.db")).unwrap();
    let args = ["send", "c", "--yes"];
    let out = mailroom(dir.path(), &args, &[]);
    drop(held);
    let text = transcript(dir.path(), &args, &out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let pid = std::process::id().to_string();
    assert!(text.contains(&format!("(pid {pid})")), "{text}");
    insta::assert_snapshot!(text.replace(&pid, "[PID]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_aborted_by_a_relay_without_starttls() {
    let relay = Relay::plain("").await;
    let dir = relay.dir.path();
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"",
        relay.port()
    );
    campaign(dir, &smtp);
    let args = ["send", "c", "--yes"];
    let out = mailroom(dir, &args, &[]);
    let text = transcript(dir, &args, &out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!relay.transcript_has("MAIL"), "{text}");
    insta::assert_snapshot!(text.replace(&relay.port().to_string(), "[PORT]"));
}

/// A ledger file that exists but holds nothing (`touch`, or a crash while a first send created
/// it) is no ledger yet: `send` makes it one, where it used to refuse it as "not a mailroom
/// ledger" and leave the user to guess whether deleting it was safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_makes_an_empty_ledger_file_its_ledger() {
    let relay = Relay::plain("").await;
    let dir = relay.dir.path();
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"",
        relay.port()
    );
    campaign(dir, &smtp);
    let db = dir.join("c/mailroom.db");
    std::fs::write(&db, b"").unwrap();
    for args in [&["send", "c", "--dry-run"][..], &["send", "c", "--yes"]] {
        let out = mailroom(dir, args, &[]);
        let text = transcript(dir, args, &out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(!text.contains("not a mailroom ledger"), "{text}");
    }
    let report = mailroom(dir, &["report", "c", "--format", "json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(json["totals"]["accepted"], 1, "{json}");
    assert!(relay.transcript_has("RCPT TO:<A@EXAMPLE.TEST>"));
}

#[test]
fn check_lists_every_problem_row_with_its_line() {
    let f = common::fixture::Fixture::base();
    f.csv(concat!(
        "email,name,first_name,ref\n",
        "ann@example.com,Ann,Ann,a1\n",
        "no-at-sign.example.com,A,A,a\n",
        ",B,B,b\n",
        "c@localhost,C,C,c\n",
        "short@example.com,S\n",
        "ANN@Example.COM,A2,A,a\n",
        "subj@example.com,S,\"Eve\r\nBcc: victim@example.org\",r2\n",
        "bell@example.com,B,\"Eve\u{7}\",r6\n",
    ));
    let args = ["check", "."];
    let out = mailroom(f.path(), &args, &[]);
    let text = transcript(f.path(), &args, &out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    insta::assert_snapshot!(text);
}

/// `mailroom ARGS` in `dir` with standard output going to `stdout`: its exit code and what it
/// wrote on standard error.
fn mailroom_into(dir: &Path, args: &[&str], stdout: impl Into<Stdio>) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mailroom dkim keygen` writing its key to `key`.
fn keygen(key: &Path) -> [&str; 8] {
    let key = key.to_str().unwrap();
    [
        "dkim",
        "keygen",
        "--domain",
        "example.test",
        "--selector",
        "s1",
        "--out",
        key,
    ]
}

/// A pipe whose reader has gone, as after `| head` read what it wanted: every write to it
/// fails with EPIPE. The reader is closed before the command starts, so nothing races.
fn reader_gone() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[test]
fn output_to_a_reader_that_went_away_ends_the_output_not_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sent(d);
    let mut emails: Vec<String> = (0..50).map(|i| format!("not-an-address-{i}")).collect();
    emails.push("ok@example.test".into());
    write_campaign(d, "bad", "news@sender.test", LOOPBACK, &emails);
    let bounce = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces/corpus");
    let bounce = std::fs::read_dir(bounce)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "eml"))
        .unwrap();
    let bounce = bounce.to_str().unwrap();
    let key = d.join("k.pem");
    let keygen = keygen(&key);
    let cases: [(&[&str], i32); 6] = [
        (&keygen, 0),
        // 50 invalid rows: finished with problems, as with a reader that stays.
        (&["check", "bad"], 1),
        (&["check", "bad", "--json"], 1),
        (&["report", "--db", "c/mailroom.db", "--format", "csv"], 0),
        (&["report", "--db", "c/mailroom.db"], 0),
        (&["bounces", "parse", bounce], 0),
    ];
    for (args, code) in cases {
        let (got, stderr) = mailroom_into(d, args, reader_gone());
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
    assert!(
        key.exists(),
        "keygen wrote the key before its output went nowhere"
    );

    // preview stops at the first message nobody reads (of three it could show).
    let three: Vec<String> = ["a", "b", "c"].map(|n| format!("{n}@example.test")).into();
    write_campaign(d, "three", "news@sender.test", LOOPBACK, &three);
    let (got, stderr) = mailroom_into(d, &["preview", "three", "--limit", "3"], reader_gone());
    assert_eq!(got, Some(0), "{stderr}");
    assert!(stderr.contains("==> message 1 of 3"), "{stderr}");
    assert!(!stderr.contains("message 2 of 3"), "{stderr}");
}

#[test]
fn output_that_cannot_be_written_for_another_reason_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sent(d);
    let full = || std::fs::File::create("/dev/full").unwrap();
    // The key is written, but the record to publish was lost: said, and not a success.
    let key = d.join("k.pem");
    let (got, stderr) = mailroom_into(d, &keygen(&key), full());
    assert_eq!(got, Some(1), "{stderr}");
    assert!(
        stderr.contains("could not write everything to standard output: No space left on device"),
        "{stderr}"
    );
    assert!(key.exists());
    // A report that streams through its own writer fails with the reason.
    let (got, stderr) = mailroom_into(
        d,
        &["report", "--db", "c/mailroom.db", "--format", "csv"],
        full(),
    );
    assert_eq!(got, Some(2), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
}
