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
