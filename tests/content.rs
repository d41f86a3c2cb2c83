//! What goes into a message from real-world files (issue 15): contacts files shaped like the
//! exports people actually have (Mailchimp, Excel with semicolons in windows-1252, Excel's UTF-16
//! "Unicode Text", Outlook in ISO-8859-1; `tests/fixtures/exports/`), Handlebars segment
//! literals for columns with spaces, the refusal of a file that is not in its encoding, and the
//! text part generated from an HTML-only body. Through the real binary (`check`, `preview`) and
//! the library's renderer; every message is parsed back with mail-parser, so a test sees what a
//! mail client would show.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::fixture::Fixture;
use mail_parser::{MessageParser, MimeHeaders};
use mailroom::campaign::{Campaign, ContactEntry};
use serde_json::Value;

fn export(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exports")
        .join(name)
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn mailroom(args: &[&str], dir: &Path) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// (subject, text body) of every valid contact's message, in file order.
fn rendered(dir: &Path) -> Vec<(String, String)> {
    let campaign = Campaign::load(dir).unwrap();
    campaign
        .contacts()
        .unwrap()
        .map(|e| match e.unwrap() {
            ContactEntry::Valid(c) => {
                let bytes = campaign.render(&c).unwrap().bytes;
                let m = MessageParser::default().parse(&bytes).unwrap();
                (
                    m.subject().unwrap().to_owned(),
                    m.body_text(0).unwrap().into_owned(),
                )
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

macro_rules! exports {
    ($($name:ident: $dir:literal => [$($subject:literal, $first_line:literal, $dear:expr;)*];)*) => {$(
        #[test]
        fn $name() {
            let dir = export($dir);
            let out = mailroom(&["check", "--json"], &dir);
            assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
            let v: Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(v["invalid_count"], 0, "{v:#}");
            assert!(v["missing_variables"].as_array().unwrap().is_empty(), "{v:#}");
            let expected: &[(&str, &str, Option<&str>)] = &[$(($subject, $first_line, $dear)),*];
            assert_eq!(v["valid"], expected.len(), "{v:#}");
            let messages = rendered(&dir);
            for ((subject, text), (want_subject, want_first, want_dear)) in
                messages.iter().zip(expected)
            {
                assert_eq!(subject, want_subject);
                assert!(text.starts_with(want_first), "{text:?}");
                match want_dear {
                    Some(dear) => assert!(text.contains(dear), "{text:?}"),
                    None => assert!(!text.contains("Dear"), "{text:?}"),
                }
                // No replacement characters, no UTF-8 read as windows-1252.
                assert!(!text.contains('\u{fffd}') && !text.contains('Ã'), "{text:?}");
            }
        }
    )*};
}

exports! {
    a_mailchimp_export_with_spaces_in_column_names_a_bom_crlf_and_quotes: "mailchimp" => [
        "Zoë, December at the bakery", "Hello Zoë,", Some("Dear Zoë BRONTË:");
        "José, December at the bakery", "Hello José,", None;
        "Friends, December at the bakery", "Hello there,", None;
    ];
    an_excel_export_in_windows_1252_with_semicolons: "excel-semicolon" => [
        "Zoë, December at the bakery", "Hello Zoë,", Some("Dear Zoë BRONTË:");
        "José, December at the bakery", "Hello José,", Some("Dear José NUÑEZ; JR.:");
        "Inès, December at the bakery", "Hello Inès,", None;
    ];
    an_excel_unicode_text_export_in_utf16_with_tabs: "excel-unicode" => [
        "Zoë, December at the bakery", "Hello Zoë,", Some("Dear Zoë BRONTË:");
        "健二, December at the bakery", "Hello 健二,", Some("Dear 健二 山田:");
        "Ana 😀, December at the bakery", "Hello Ana 😀,", None;
    ];
    a_google_contacts_export_with_its_wide_header_and_crlf: "google-contacts" => [
        "Zoë, December at the bakery", "Hello Zoë,", Some("Dear Zoë BRONTË:");
        "Łukasz, December at the bakery", "Hello Łukasz,", Some("Dear Łukasz WIŚNIEWSKI:");
        "Friends, December at the bakery", "Hello there,", None;
    ];
    an_outlook_export_in_iso_8859_1_with_a_multiline_field: "outlook" => [
        "Zoë, December at the bakery", "Hello Zoë,", Some("Dear Zoë BRONTË:");
        "François, December at the bakery", "Hello François,", Some("Dear François GÉRARD:");
        "Björn, December at the bakery", "Hello Björn,", None;
    ];
}

#[test]
fn preview_of_a_windows_1252_export_is_utf8_on_the_wire() {
    let out = mailroom(&["preview", "--line", "3"], &export("excel-semicolon"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let m = MessageParser::default()
        .parse(out.stdout.as_bytes())
        .unwrap();
    assert_eq!(
        m.to().unwrap().first().unwrap().address(),
        Some("jose@ok.example")
    );
    assert!(m.body_text(0).unwrap().contains("Málaga") || m.body_text(0).unwrap().contains("José"));
    assert!(out.stdout.contains("charset=utf-8"), "{}", out.stdout);
}

/// A copy of an export fixture whose contacts file is replaced by `bytes`.
fn export_with(name: &str, bytes: &[u8]) -> Fixture {
    let f = Fixture::base();
    for file in ["campaign.toml", "body.txt.hbs"] {
        f.write(file, std::fs::read(export(name).join(file)).unwrap());
    }
    f.csv(bytes);
    f
}

#[test]
fn one_byte_that_is_not_utf8_refuses_the_whole_file_in_every_command() {
    // Row 3 of 4 has a windows-1252 "é": the file is windows-1252, not UTF-8 with a bad row.
    let f = export_with(
        "mailchimp",
        b"Email Address,First Name\nann@ok.example,Ann\nbea@ok.example,B\xe9a\ncy@ok.example,Cy\n",
    );
    for args in [
        &["check"][..],
        &["preview"][..],
        &["send", "--yes"][..],
        &["send", "--dry-run"][..],
    ] {
        let out = mailroom(args, f.path());
        assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
        for needle in [
            "contacts.csv:3:",
            "byte 0xE9 at byte 61 of the file",
            "encoding = \"windows-1252\"",
            "where 0xE9 is \"é\"",
            "re-save the file as UTF-8",
        ] {
            assert!(
                out.stderr.contains(needle),
                "{args:?}: {needle:?} in {}",
                out.stderr
            );
        }
    }
    let out = mailroom(&["check", "--json"], f.path());
    assert_eq!(out.code, 2);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["errors"][0]["line"], 3, "{v:#}");
    assert_eq!(v["valid"], 0, "nothing of the file is used: {v:#}");
    insta::assert_snapshot!(f.redact(&mailroom(&["check"], f.path()).stderr));
}

#[test]
fn a_utf8_file_declared_windows_1252_is_refused_before_it_becomes_mojibake() {
    let f = export_with(
        "excel-semicolon",
        "E-Mail;First Name;Last Name;City\r\nzoe@ok.example;Zoë;B;Z\r\n".as_bytes(),
    );
    let out = mailroom(&["check"], f.path());
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("contacts.csv:2:"), "{}", out.stderr);
    assert!(out.stderr.contains("would become \"Ã©\""), "{}", out.stderr);
    insta::assert_snapshot!(f.redact(&out.stderr));
}

#[test]
fn an_unknown_encoding_is_refused_at_its_line() {
    let f = export_with(
        "outlook",
        &std::fs::read(export("outlook/contacts.csv")).unwrap(),
    );
    f.edit_toml("encoding = \"iso-8859-1\"", "encoding = \"latin-9000\"");
    let out = mailroom(&["check"], f.path());
    assert_eq!(out.code, 2, "{}", out.stderr);
    insta::assert_snapshot!(f.redact(&out.stderr));
}

#[test]
fn a_mailchimp_header_without_email_column_is_told_which_column_to_use() {
    let f = export_with(
        "mailchimp",
        b"\"Email Address\",\"First Name\"\r\n\"a@ok.example\",\"A\"\r\n",
    );
    f.edit_toml("email_column = \"Email Address\"", "");
    let out = mailroom(&["check"], f.path());
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("Set email_column = \"Email Address\""),
        "{}",
        out.stderr
    );
    // A semicolon file read with commas is one column: the fix names the delimiter.
    let f = export_with(
        "excel-semicolon",
        b"E-Mail;First Name\r\nzoe@ok.example;Z\r\n",
    );
    f.edit_toml("delimiter = \";\"", "");
    let out = mailroom(&["check"], f.path());
    assert!(
        out.stderr.contains("Set delimiter = \";\""),
        "{}",
        out.stderr
    );
}

#[test]
fn segment_literals_are_checked_against_the_header_at_their_line() {
    let f = export_with(
        "mailchimp",
        &std::fs::read(export("mailchimp/contacts.csv")).unwrap(),
    );
    f.write(
        "body.txt.hbs",
        "Hello {{default [First Name] \"there\"}},\n{{#if [Last Name]}}x{{/if}}\n{{[Frist Name]}}\n",
    );
    let out = mailroom(&["check", "--json"], f.path());
    assert_eq!(out.code, 1, "{}", out.stdout);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let missing = v["missing_variables"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{v:#}");
    assert_eq!(missing[0]["variable"], "Frist Name");
    assert_eq!(missing[0]["line"], 3);
}

/// The base fixture with only an HTML body, and `extra` under [campaign].
fn html_only(extra: &str) -> Fixture {
    let f = Fixture::base();
    f.edit_toml("text = \"body.txt.hbs\"\n", extra);
    f.write(
        "body.html.hbs",
        "<html><head><style>p{}</style></head><body><h1>Hello {{first_name}}</h1>\
         <p>Our <a href=\"https://bakery.example/menu\">menu</a> is out.<br>\
         <img src=\"x.png\" alt=\"Ferry Street Bakery\"></p></body></html>",
    );
    f
}

#[test]
fn an_html_only_campaign_gets_a_generated_text_part_unless_it_opts_out() {
    let f = html_only("");
    let bytes = first_message(f.path());
    let m = MessageParser::default().parse(&bytes).unwrap();
    let ct = m.content_type().unwrap();
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );
    let text = m.body_text(0).unwrap().replace("\r\n", "\n");
    assert!(text.starts_with("Hello "), "{text}");
    assert!(
        text.contains("Our menu (https://bakery.example/menu) is out.\nFerry Street Bakery"),
        "{text}"
    );
    assert!(!text.contains("p{}") && !text.contains('<'), "{text}");
    assert!(m.body_html(0).unwrap().contains("<h1>"));

    let f = html_only("generate_text = false\n");
    let bytes = first_message(f.path());
    let m = MessageParser::default().parse(&bytes).unwrap();
    let ct = m.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("html")));
}

fn first_message(dir: &Path) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["preview"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `n` bytes that no encoding step could leave unchanged by accident (every byte value).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The base fixture with `files/brochure.pdf` for everyone and a per-row `files` column.
fn with_attachments(csv: &str, extra_campaign: &str, extra_contacts: &str) -> Fixture {
    let f = Fixture::base();
    f.write("files/brochure.pdf", noise(200_000, 1));
    f.write("files/Prospekt für Zoë.pdf", noise(3_000, 2));
    f.write("files/menu.txt", "Rye\nSpelt\n");
    f.edit_toml(
        "html = \"body.html.hbs\"\n",
        &format!(
            "html = \"body.html.hbs\"\nattachments = [\"files/brochure.pdf\"]\n{extra_campaign}"
        ),
    );
    f.edit_toml(
        "path = \"contacts.csv\"\n",
        &format!("path = \"contacts.csv\"\nattachment_column = \"files\"\n{extra_contacts}"),
    );
    f.csv(csv);
    f
}

#[test]
fn attachments_for_everyone_and_per_row_are_byte_identical_with_their_names() {
    let f = with_attachments(
        "email,name,first_name,ref,files\n\
         ann@example.com,Ann,Ann,a,files/Prospekt für Zoë.pdf; files/menu.txt\n\
         bob@example.com,Bob,Bob,b,\n",
        "",
        "",
    );
    let out = mailroom(&["check", "--json"], f.path());
    assert_eq!(out.code, 0, "{}", out.stdout);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["attachments"][0]["file"], "files/brochure.pdf", "{v:#}");
    assert_eq!(v["attachments"][0]["bytes"], 200_000);
    assert!(v["attachments"][0]["encoded_bytes"].as_u64().unwrap() > 270_000);

    let campaign = Campaign::load(f.path()).unwrap();
    let contacts: Vec<_> = campaign
        .contacts()
        .unwrap()
        .map(|e| match e.unwrap() {
            ContactEntry::Valid(c) => c,
            other => panic!("{other:?}"),
        })
        .collect();
    let ann = campaign.render(&contacts[0]).unwrap().bytes;
    assert!(
        ann.split(|b| *b == b'\n').all(|l| l.len() <= 78),
        "every line short"
    );
    let m = MessageParser::default().parse(&ann).unwrap();
    let ct = m.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("mixed")));
    // The text and HTML alternatives stay one part of the mixed message.
    assert!(m.body_text(0).unwrap().contains("Ann"));
    assert!(m.body_html(0).is_some());
    let attached: Vec<(String, String, Vec<u8>)> = m
        .attachments()
        .map(|a| {
            let ct = a.content_type().unwrap();
            (
                a.attachment_name().unwrap().to_owned(),
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")),
                a.contents().to_vec(),
            )
        })
        .collect();
    assert_eq!(
        attached,
        vec![
            (
                "brochure.pdf".into(),
                "application/pdf".into(),
                noise(200_000, 1)
            ),
            (
                "Prospekt für Zoë.pdf".into(),
                "application/pdf".into(),
                noise(3_000, 2)
            ),
            (
                "menu.txt".into(),
                "text/plain".into(),
                b"Rye\nSpelt\n".to_vec()
            ),
        ]
    );
    let bob = campaign.render(&contacts[1]).unwrap().bytes;
    let m = MessageParser::default().parse(&bob).unwrap();
    assert_eq!(m.attachments().count(), 1);
}

#[test]
fn a_row_attachment_outside_the_folder_or_missing_is_refused_at_its_line() {
    let f = with_attachments(
        "email,name,first_name,ref,files\n\
         ann@example.com,Ann,Ann,a,files/menu.txt\n\
         bob@example.com,Bob,Bob,b,../../etc/passwd\n\
         cy@example.com,Cy,Cy,c,/etc/passwd\n\
         di@example.com,Di,Di,d,files/nothing.pdf\n",
        "",
        "",
    );
    let out = mailroom(&["check", "--json"], f.path());
    assert_eq!(out.code, 1, "{}", out.stdout);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let invalid: Vec<(u64, String)> = v["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["line"].as_u64().unwrap(),
                i["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(invalid.len(), 3, "{v:#}");
    assert_eq!(invalid[0].0, 3);
    assert!(
        invalid[0]
            .1
            .contains("attachment `../../etc/passwd` (column `files`): `..` is not allowed"),
        "{}",
        invalid[0].1
    );
    assert!(
        invalid[1].1.contains("absolute path is not allowed"),
        "{}",
        invalid[1].1
    );
    assert!(invalid[2].1.contains("does not exist"), "{}", invalid[2].1);
    insta::assert_snapshot!(f.redact(&mailroom(&["check"], f.path()).stdout));
}

#[test]
fn a_campaign_attachment_outside_the_folder_is_refused_at_its_toml_line() {
    for (written, needle) in [
        ("../secret.pdf", "`..` is not allowed"),
        ("/etc/hostname", "absolute path"),
        ("files/none.pdf", "does not exist"),
    ] {
        let f = with_attachments(
            "email,name,first_name,ref,files\na@example.com,A,A,a,\n",
            "",
            "",
        );
        f.edit_toml("files/brochure.pdf", written);
        let out = mailroom(&["check"], f.path());
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains("campaign.toml:8:"), "{}", out.stderr);
        assert!(out.stderr.contains(needle), "{}", out.stderr);
    }
    #[cfg(unix)]
    {
        let f = with_attachments(
            "email,name,first_name,ref,files\na@example.com,A,A,a,\n",
            "",
            "",
        );
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.pdf"), b"secret").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.pdf"),
            f.path().join("files/link.pdf"),
        )
        .unwrap();
        f.edit_toml("files/brochure.pdf", "files/link.pdf");
        let out = mailroom(&["check"], f.path());
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(
            out.stderr.contains("outside the campaign folder"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn check_reports_every_message_over_max_message_size() {
    let f = with_attachments(
        "email,name,first_name,ref,files\n\
         ann@example.com,Ann,Ann,a,files/Prospekt für Zoë.pdf\n\
         bob@example.com,Bob,Bob,b,\n",
        "",
        "",
    );
    let size = |v: &Value| v["message_size"]["max"].as_u64().unwrap();
    let (_, v) = {
        let out = mailroom(&["check", "--json"], f.path());
        (
            out.code,
            serde_json::from_str::<Value>(&out.stdout).unwrap(),
        )
    };
    // Between the two messages' sizes: only Ann's is over.
    let limit = size(&v) - 100;
    f.append_toml(&format!("[smtp]\nmax_message_size = {limit}"));
    let out = mailroom(&["check", "--json"], f.path());
    assert_eq!(out.code, 1, "{}", out.stdout);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["max_message_size"], limit);
    assert_eq!(v["oversize_count"], 1, "{v:#}");
    assert_eq!(v["oversize"][0]["line"], 2);
    let text = mailroom(&["check"], f.path()).stdout;
    assert!(
        text.contains("messages over [smtp] max_message_size"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_relays_size_fails_unsent_and_the_others_carry_their_files() {
    let relay = common::relay::Relay::plain("").await;
    // The sandbox advertises SIZE 10485760: Bob's 8 MB file is 10.8 MB once encoded.
    let f = with_attachments(
        "email,name,first_name,ref,files\n\
         ann@example.com,Ann,Ann,a,files/Prospekt für Zoë.pdf\n\
         bob@example.com,Bob,Bob,b,files/big.bin\n\
         cy@example.com,Cy,Cy,c,\n",
        "",
        "",
    );
    f.write("files/big.bin", noise(8_000_000, 3));
    f.append_toml(&format!("[smtp]\n{}", relay.smtp_table("")));
    let dir = f.path().to_owned();
    let out = tokio::task::spawn_blocking(move || mailroom(&["send", "--yes"], &dir))
        .await
        .unwrap();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let ledger = f.path().join("mailroom.db");
    assert_eq!(
        common::states(&ledger),
        common::state_map(&[("accepted", 2), ("failed", 1)])
    );
    let bob = common::attempts(&ledger, "bob@example.com");
    assert_eq!(bob, vec![("size".into(), None, None, "failed".into())]);
    let conn = rusqlite::Connection::open(&ledger).unwrap();
    let reply: String = conn
        .query_row(
            "SELECT last_reply FROM recipients WHERE email = 'bob@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        reply.contains("more than the SIZE the relay advertises (10485760 bytes)"),
        "{reply}"
    );
    // Never offered to the relay: no MAIL for it, so no 552 either.
    assert_eq!(relay.rcpts_for("bob@example.com"), 0);
    for (who, files) in [
        ("ann@example.com", vec![noise(200_000, 1), noise(3_000, 2)]),
        ("cy@example.com", vec![noise(200_000, 1)]),
    ] {
        let stored = relay.body_of(who);
        let m = MessageParser::default().parse(stored.as_bytes()).unwrap();
        let got: Vec<Vec<u8>> = m.attachments().map(|a| a.contents().to_vec()).collect();
        assert!(
            got == files,
            "{who}: attachments differ after base64 decoding"
        );
    }
}
