//! Campaign loading, `init`, `check` and `preview`, through the real binary on real files.
//! Bad campaigns are built by copying `tests/fixtures/campaigns/base` into a temporary folder
//! and breaking one thing; each test asserts the exact message, file and line the user sees.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::fixture::Fixture;
use mailroom::campaign::{Campaign, Contact, ContactEntry};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    raw_stdout: Vec<u8>,
}

fn mailroom(args: &[&str], dir: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .arg(dir)
        .env_remove("MAILROOM_SMTP_PASSWORD")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw_stdout: out.stdout,
    }
}

fn check(dir: &Path) -> Run {
    mailroom(&["check"], dir)
}

fn check_json(dir: &Path) -> (i32, Value) {
    let r = mailroom(&["check", "--json"], dir);
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}):\n{}", r.stdout));
    (r.code, v)
}

/// Asserts a fatal (exit 2) error whose stderr contains every needle, and that --json agrees.
fn assert_fatal(f: &Fixture, needles: &[&str]) -> String {
    let r = check(f.path());
    assert_eq!(r.code, 2, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "missing {n:?} in:\n{}", r.stderr);
    }
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let (code, v) = check_json(f.path());
    assert_eq!(code, 2);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v:#}");
    assert!(errors[0]["file"].as_str().is_some_and(|s| !s.is_empty()));
    r.stderr
}

fn invalid_reasons(v: &Value) -> Vec<(u64, String)> {
    v["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["line"].as_u64().unwrap(),
                i["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Bad campaigns: unreadable (exit 2)

#[test]
fn missing_folder_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let r = check(&dir.path().join("nope"));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("cannot read") && r.stderr.contains("nope"),
        "{}",
        r.stderr
    );
    insta::assert_snapshot!(common::redact_dir(&r.stderr, dir.path()));
}

#[test]
fn folder_without_campaign_toml_suggests_init() {
    let dir = tempfile::tempdir().unwrap();
    let r = check(dir.path());
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no campaign.toml"), "{}", r.stderr);
    assert!(r.stderr.contains("mailroom init"), "{}", r.stderr);
    insta::assert_snapshot!(common::redact_dir(&r.stderr, dir.path()));
}

/// The base campaign broken one way, and what `check` must say: exit 2, each needle in stderr
/// and none of the `never` ones, one error in `--json`. The whole message is pinned by a
/// snapshot (tests/snapshots/campaign__<test name>.snap), so a change to what users read shows
/// in review.
fn broken(name: &str, breaks: impl Fn(&Fixture), says: &[&str], never: &[&str]) {
    let f = Fixture::base();
    breaks(&f);
    let e = assert_fatal(&f, says);
    for needle in never {
        assert!(!e.contains(needle), "{e}");
    }
    insta::assert_snapshot!(name, f.redact(&e));
}

/// `&[]`, or a reference to the needles given.
macro_rules! or_none {
    () => {
        &[]
    };
    ($needles:expr) => {
        &$needles
    };
}

/// One test per row: `name: BREAKS => [needles] (never [needles])?;`, where BREAKS is a
/// closure on the [`Fixture`] or `append "TOML"` (tables added to campaign.toml).
macro_rules! broken {
    () => {};
    ($name:ident: append $toml:literal => $says:expr $(, never $never:expr)?; $($rest:tt)*) => {
        broken!($name: |f: &Fixture| { f.append_toml($toml); } => $says $(, never $never)?; $($rest)*);
    };
    ($name:ident: $breaks:expr => $says:expr $(, never $never:expr)?; $($rest:tt)*) => {
        #[test]
        fn $name() {
            let never: &[&str] = or_none!($($never)?);
            broken(stringify!($name), $breaks, &$says, never);
        }
        broken!($($rest)*);
    };
}

broken! {
    missing_template_file_names_the_key_and_line:
        |f| { f.edit_toml("text = \"body.txt.hbs\"", "text = \"missing.txt.hbs\""); }
        => ["campaign.toml:6:", "campaign.text", "missing.txt.hbs", "does not exist"];
    missing_contacts_file_names_the_key_and_line:
        |f| { f.remove("contacts.csv"); }
        => ["campaign.toml:13:", "contacts.path", "does not exist"];
    malformed_toml_gives_line_and_column:
        |f| { f.edit_toml("reply_to = \"team@example.com\"", "reply_to = \"team@example.com"); }
        => ["campaign.toml:4:", "Fix the TOML syntax", "[campaign]"];
    unknown_key_names_key_line_and_section:
        |f| { f.edit_toml("path = \"contacts.csv\"", "path = \"contacts.csv\"\nemail_colum = \"mail\""); }
        => ["campaign.toml:14:1", "email_colum", "[contacts]", "docs/campaign-toml.md"];
    missing_required_key_names_the_section:
        |f| { f.edit_toml("subject = \"Grüße, {{first_name}}!\"\n", ""); }
        => ["missing field `subject`", "Add the missing key"];
    a_value_of_the_wrong_type_gives_line_and_column:
        append "[smtp]\nport = \"587\"" => ["campaign.toml:23:8", "expected u16", "[smtp]"];
    password_in_toml_is_refused_without_echoing_it:
        append "[smtp]\nhost = \"smtp.example.com\"\npassword = \"hunter2\"" => ["smtp.password", "password_env", "password_file"], never ["hunter2"];
    missing_email_column_lists_columns_and_fix:
        |f| { f.csv("mail,name,first_name,ref\nann@example.com,Ann,Ann,a\n"); }
        => ["contacts.csv:1:", "no column `email`", "mail, name, first_name, ref", "email_column"];
    configured_name_column_must_exist:
        |f| { f.edit_toml("path = \"contacts.csv\"", "path = \"contacts.csv\"\nname_column = \"full_name\""); }
        => ["contacts.csv:1:", "no column `full_name`", "name_column"];
    empty_email_column_is_refused:
        |f| { f.edit_toml("path = \"contacts.csv\"", "path = \"contacts.csv\"\nemail_column = \"\""); }
        => ["contacts.email_column", "email_column is empty"];
    empty_csv_is_unreadable:
        |f| { f.csv(""); }
        => ["contacts.csv", "empty", "header row"];
    duplicate_header_column_is_fatal:
        |f| { f.csv("email,name,first_name,ref,name\n"); }
        => ["contacts.csv:1:", "`name` twice"];
    a_header_row_that_is_not_utf8_is_fatal:
        |f| { f.csv(b"email,n\xe9me\nann@example.com,Ann\n".as_slice()); }
        => ["contacts.csv:1:", "the file is not UTF-8: byte 0xE9", "encoding = \"windows-1252\""];
    a_template_that_is_not_utf8_is_named_with_line_column_and_fix:
        |f| { f.write("body.txt.hbs", b"Hello {{first_name}},\n\nCaf\xE9\n".as_slice()); }
        => ["body.txt.hbs: it is not UTF-8: byte 0xE9", "on line 3, column 4", "iconv -f windows-1252"];
    a_table_written_twice_names_both_lines:
        |f| { f.edit_toml("[unsubscribe]\n", "[contacts]\ndelimiter = \",\"\n\n[unsubscribe]\n"); }
        => ["campaign.toml:15:", "the table [contacts] is written twice: here and at line 12", "move the keys under this header into the table at line 12"];
    a_key_written_twice_names_both_lines:
        |f| { f.edit_toml("path = \"contacts.csv\"", "path = \"contacts.csv\"\npath = \"other.csv\""); }
        => ["campaign.toml:14:", "the key `path` of [contacts] is written twice: here and at line 13", "delete this line or the one at line 13"];
    a_key_written_twice_under_a_commented_header_names_its_table:
        |f| { f.edit_toml("[contacts]\npath = \"contacts.csv\"", "[contacts]  # the list\npath = \"contacts.csv\"\npath = \"x.csv\""); }
        => ["campaign.toml:14:", "the key `path` of [contacts] is written twice: here and at line 13"];
    template_syntax_error_points_into_the_template:
        |f| { f.write("body.txt.hbs", "Hello {{first_name}},\n\n{{#if ref}}unclosed\n"); }
        => ["body.txt.hbs:3:1:", "template `body.txt.hbs` does not compile", "`{{#if}}` is never closed", "{{/if}}"];
    subject_syntax_error_points_at_its_toml_line:
        |f| { f.edit_toml("{{first_name}}!", "{{first_name!"); }
        => ["campaign.toml:5", "template `campaign.subject` does not compile", "never closed by `}}`"];
    missing_partial_names_template_and_partial:
        |f| { f.remove("partials/footer.hbs"); }
        => ["body.txt.hbs:3", "template `body.txt.hbs`", "partial `footer`", "partials/footer.hbs"];
    partials_in_a_circle_are_refused_before_rendering:
        |f| { f.write("partials/footer.hbs", "-- {{> signature}}"); f.write("partials/signature.hbs", "{{> footer}}"); }
        => ["body.txt.hbs:3", "in a circle (footer → signature → footer)", "Remove one of these"];
    an_empty_campaign_name_is_refused:
        |f| { f.edit_toml("name = \"fixture\"", "name = \" \""); }
        => ["campaign.toml:2:", "campaign.name", "2026-spring-newsletter"];
    invalid_from_address_is_named_with_its_line:
        |f| { f.edit_toml("<news@example.com>", "<news.example.com>"); }
        => ["campaign.toml:3:", "campaign.from", "not a valid sender address", "no @"];
    invalid_reply_to_is_named_with_its_line:
        |f| { f.edit_toml("reply_to = \"team@example.com\"", "reply_to = \"team.example.com\""); }
        => ["campaign.toml:4:", "campaign.reply_to", "not a valid address"];
    no_body_template_is_refused:
        |f| { f.edit_toml("text = \"body.txt.hbs\"\n", ""); f.edit_toml("html = \"body.html.hbs\"\n", ""); }
        => ["names no body template", "markdown"];
    markdown_with_text_is_refused:
        |f| { f.edit_toml("html = \"body.html.hbs\"", "html = \"body.html.hbs\"\nmarkdown = \"issue.md.hbs\""); }
        => ["campaign.markdown", "cannot be combined"];
    custom_header_overriding_a_builtin_is_refused:
        |f| { f.edit_toml("\"X-Campaign-Ref\"", "\"Subject\""); }
        => ["campaign.toml:10:", "written by mailroom itself"];
    an_invalid_header_name_is_refused:
        |f| { f.edit_toml("\"X-Campaign-Ref\"", "\"X Campaign Ref\""); }
        => ["campaign.toml:10:", "is not a valid header name"];
    http_unsubscribe_url_is_refused:
        |f| { f.edit_toml("https://example.com/u/", "http://example.com/u/"); }
        => ["campaign.toml:16:", "unsubscribe.url", "is not https", "RFC 8058"];
    an_invalid_unsubscribe_mailto_is_refused:
        |f| { f.edit_toml("mailto = \"unsubscribe@example.com\"", "mailto = \"unsubscribe\""); }
        => ["campaign.toml:17:", "unsubscribe.mailto", "not a valid mailto address"];
    an_invalid_return_path_is_refused:
        |f| { f.edit_toml("bounces+{token}@example.com", "bounces+{token}"); }
        => ["campaign.toml:20:", "bounces.return_path", "VERP"];
    zero_connections_are_refused:
        append "[smtp]\nconnections = 0" => ["smtp.connections", "at least 1"];
    thousands_of_connections_are_refused:
        append "[smtp]\nconnections = 5000" => ["smtp.connections", "at most 1000", "[[relay]]"];
    zero_messages_per_connection_are_refused:
        append "[smtp]\nmessages_per_connection = 0" => ["smtp.messages_per_connection", "at least 1"];
    password_env_must_name_a_variable:
        append "[smtp]\npassword_env = \"SMTP-PASSWORD\"" => ["smtp.password_env", "not an environment variable name"];
    an_absurd_rate_is_refused:
        append "[rate]\nper_minute = 1e300" => ["rate.per_minute", "outside the supported range"];
    an_absurd_domain_rate_is_refused:
        append "[rate.per_domain]\n\"example.com\" = 1e-9" => ["example.com", "outside the supported range"];
    a_zero_burst_is_refused:
        append "[rate]\nburst = 0" => ["rate.burst", "at least 1"];
    zero_max_attempts_are_refused:
        append "[retry]\nmax_attempts = 0" => ["retry.max_attempts", "at least 1"];
    a_bad_backoff_duration_is_refused:
        append "[retry]\nbackoff = [\"30 minutes\"]" => ["campaign.toml:", "[retry]"];
    an_absurd_backoff_is_refused:
        append "[retry]\nbackoff = [\"99999999999999d\"]" => ["campaign.toml:23", "retry.backoff", "longer than max_age"];
    a_backoff_longer_than_max_age_is_refused:
        append "[retry]\nbackoff = [\"30m\", \"5d\"]\nmax_age = \"3d\"" => ["retry.backoff", "backoff[1]", "longer than max_age"];
    a_max_age_beyond_a_month_is_refused:
        append "[retry]\nmax_age = \"400d\"" => ["retry.max_age", "30d"];
    an_hour_long_timeout_is_the_limit:
        append "[smtp]\ncommand_timeout = 86400" => ["smtp.command_timeout", "longer than an hour"];
    plaintext_to_a_remote_relay_is_refused_by_check_as_by_send:
        append "[smtp]\nhost = \"smtp.example.com\"\nsecurity = \"none\"" => ["smtp.security", "smtp.example.com", "not localhost"];
    plaintext_with_a_username_is_refused_by_check_as_by_send:
        append "[smtp]\nhost = \"127.0.0.1\"\nsecurity = \"none\"\nusername = \"me\"" => ["smtp.username", "without TLS"];
    a_hello_name_with_a_line_break_is_refused:
        append "[smtp]\nhello_name = \"client.example\\r\\nMAIL FROM:<x@y.example>\"" => ["smtp.hello_name", "not a domain name"];
    an_unknown_table_is_reported_at_the_top_level:
        append "[smpt]\nhost = \"x\"" => ["unknown field `smpt`", "(in the top level)"], never ["in [store]"];
    a_folder_as_a_template_is_not_called_missing:
        |f| { f.edit_toml("text = \"body.txt.hbs\"", "text = \"partials\""); }
        => ["campaign.text", "is a folder, not a file"], never ["does not exist"];
    a_device_as_a_template_is_not_read:
        |f| { f.edit_toml("text = \"body.txt.hbs\"", "text = \"/dev/zero\""); }
        => ["campaign.text", "not a regular file"], never ["does not exist"];
    a_hello_name_with_a_space_is_refused:
        append "[smtp]\nhello_name = \"my laptop\"" => ["smtp.hello_name", "not a domain name"];
}

// ---------------------------------------------------------------------------------------------
// Bad rows and template variables (exit 1): the campaign is readable, some rows are not.

#[test]
fn ragged_rows_are_invalid_with_their_line() {
    let f = Fixture::base();
    f.csv("email,name,first_name,ref\nann@example.com,Ann,Ann,a\nshort@example.com,S\nlong@example.com,L,L,l,extra\nok@example.com,O,O,o\n");
    let (code, v) = check_json(f.path());
    assert_eq!(code, 1);
    assert_eq!(v["contacts"], 4);
    assert_eq!(v["valid"], 2);
    assert_eq!(
        invalid_reasons(&v),
        vec![
            (
                3,
                "line 3: the row has 2 fields but the header has 4".into()
            ),
            (
                4,
                "line 4: the row has 5 fields but the header has 4".into()
            ),
        ]
    );
    let r = check(f.path());
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("line 3: the row has 2 fields"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_non_utf8_row_refuses_the_whole_file_at_its_line_and_byte() {
    // Issue 15: one wrong byte means the file's encoding is wrong, not that row (more in
    // tests/content.rs).
    let f = Fixture::base();
    f.csv(
        b"email,name,first_name,ref\nann@example.com,Ann,Ann,a\nbad@example.com,B\xe9a,Bea,b\n"
            .as_slice(),
    );
    assert_fatal(
        &f,
        &[
            "contacts.csv:3:",
            "byte 0xE9 at byte 70 of the file",
            "encoding",
        ],
    );
}

#[test]
fn invalid_addresses_each_get_a_reason() {
    let f = Fixture::base();
    f.csv("email,name,first_name,ref\nno-at-sign.example.com,A,A,a\n,B,B,b\nc@localhost,C,C,c\nd..e@example.com,D,D,d\nf@exa_mple.com,F,F,f\ngood@example.com,G,G,g\n");
    let (code, v) = check_json(f.path());
    assert_eq!(code, 1);
    assert_eq!(v["valid"], 1);
    let inv = invalid_reasons(&v);
    let expect = [
        (2, "there is no @"),
        (3, "the address is empty"),
        (4, "has no dot"),
        (5, "misplaced dot"),
        (6, "invalid"),
    ];
    assert_eq!(inv.len(), expect.len(), "{inv:?}");
    for ((line, reason), (el, needle)) in inv.iter().zip(expect) {
        assert_eq!(*line, el);
        assert!(
            reason.starts_with(&format!("line {el}: invalid address")),
            "{reason}"
        );
        assert!(reason.contains(needle), "{reason}");
    }
    assert_eq!(v["invalid"][0]["email"], "no-at-sign.example.com");
}

#[test]
fn duplicates_report_line_and_first_line() {
    let f = Fixture::base();
    f.csv("email,name,first_name,ref\nann@example.com,A,A,a\nbob@example.com,B,B,b\nANN@Example.COM,A2,A,a\nbob@example.com,B,B,b\n");
    let (code, v) = check_json(f.path());
    assert_eq!(code, 1);
    assert_eq!(v["valid"], 2);
    assert_eq!(
        v["duplicates"],
        serde_json::json!([
            {"line": 4, "first_line": 2, "email": "ann@example.com"},
            {"line": 5, "first_line": 3, "email": "bob@example.com"},
        ])
    );
    let r = check(f.path());
    assert!(
        r.stdout
            .contains("line 4: ann@example.com (first on line 2)"),
        "{}",
        r.stdout
    );
}

/// Hostile rows try to smuggle headers through every templated header; none may get through.
#[test]
fn crlf_injection_rejects_the_row_and_never_reaches_a_header() {
    let f = Fixture::base();
    f.csv(concat!(
        "email,name,first_name,ref\n",
        "ok@example.com,Ok,Ok,r1\n",
        "subj@example.com,S,\"Eve\r\nBcc: victim@example.org\",r2\n",
        "disp@example.com,\"Mallory\nBcc: victim@example.org\",M,r3\n",
        "hdr@example.com,H,H,\"r4\nBcc: victim@example.org\"\n",
        "lf@example.com,L,\"Eve\nX-Evil: 1\",r5\n",
        "bell@example.com,B,\"Eve\u{7}\",r6\n",
        "fine@example.com,F,F,r7\n",
    ));
    let (code, v) = check_json(f.path());
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["valid"], 2);
    assert_eq!(
        invalid_reasons(&v),
        vec![
            (
                3,
                "line 3: the subject would contain a line break (from column `first_name`)".into()
            ),
            (
                5,
                "line 5: the display name would contain a line break (from column `name`)".into()
            ),
            (
                7,
                "line 7: the header X-Campaign-Ref would contain a line break (from column `ref`)"
                    .into()
            ),
            (
                9,
                "line 9: the subject would contain a line break (from column `first_name`)".into()
            ),
            (
                11,
                "line 11: the subject would contain a control character (from column `first_name`)"
                    .into()
            ),
        ]
    );
    // Every message that is produced has exactly the header lines we expect, and no Bcc.
    // Preview shows the two good messages and names each hostile row (exit 1).
    let r = mailroom(&["preview", "--limit", "100"], f.path());
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.stderr.matches("==> message").count(), 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("line 7: the header X-Campaign-Ref would contain a line break"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("Bcc"), "{}", r.stdout);
    assert!(!r.stdout.contains("X-Evil"), "{}", r.stdout);
    let hostile = mailroom(&["preview", "--line", "3"], f.path());
    assert_eq!(hostile.code, 1);
    assert!(
        hostile
            .stderr
            .contains("subject would contain a line break"),
        "{}",
        hostile.stderr
    );
    assert!(hostile.raw_stdout.is_empty());
}

#[test]
fn template_variable_missing_from_header_is_reported_before_rendering() {
    let f = Fixture::base();
    f.write(
        "body.txt.hbs",
        "Hello {{first_name}},\n{{#if vip}}VIP{{/if}}\nYour city: {{city}}\n{{> footer}}\n",
    );
    let (code, v) = check_json(f.path());
    assert_eq!(code, 1);
    assert_eq!(v["rendered"], false);
    let mv = &v["missing_variables"];
    assert_eq!(mv.as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(mv[0]["variable"], "city");
    assert_eq!(mv[0]["template"], "body.txt.hbs");
    assert_eq!(mv[0]["line"], 3);
    let e = &v["errors"][0];
    assert!(e["file"].as_str().unwrap().ends_with("body.txt.hbs"));
    assert_eq!(e["line"], 3);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("`city`, which is not a column of")
    );
    let r = check(f.path());
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("body.txt.hbs:3: template `body.txt.hbs` uses `city`"),
        "{}",
        r.stdout
    );
}

#[test]
fn render_names_template_variable_and_line_for_a_row_lacking_a_variable() {
    let f = Fixture::base();
    let c = Campaign::load(f.path()).unwrap();
    let mut contact = first_valid(&c);
    contact.fields.remove("first_name");
    contact.line = 42;
    let e = c.render(&contact).unwrap_err();
    assert!(e.is_row());
    assert_eq!(e.line(), Some(42));
    assert_eq!(
        e.row_reason().unwrap(),
        "line 42: template `campaign.subject` uses `first_name`, which this row does not have"
    );
    assert!(e.to_string().contains("contacts.csv: line 42"), "{e}");
}

#[test]
fn invalid_rows_are_capped_in_text_but_complete_in_json() {
    let f = Fixture::base();
    let mut csv = String::from("email,name,first_name,ref\n");
    for i in 0..120 {
        csv.push_str(&format!("broken{i}.example.com,N,N,r\n"));
    }
    f.csv(csv);
    let r = check(f.path());
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("and 70 more"), "{}", r.stdout);
    let (_, v) = check_json(f.path());
    assert_eq!(v["invalid"].as_array().unwrap().len(), 120);
}

// ---------------------------------------------------------------------------------------------
// Good path: init → check → preview

#[test]
fn init_then_check_is_clean_and_init_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("news");
    let r = mailroom(&["init"], &target);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for f in [
        "campaign.toml",
        "contacts.csv",
        "body.txt.hbs",
        "body.html.hbs",
        "partials/footer.hbs",
    ] {
        assert!(target.join(f).is_file(), "{f}");
    }
    let footer = std::fs::read_to_string(target.join("partials/footer.hbs")).unwrap();
    assert!(footer.contains("{{unsubscribe_url}}") && footer.contains("postal address"));

    let r = check(&target);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("3 read: 3 valid, 0 invalid, 0 duplicates"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("MAILROOM_SMTP_PASSWORD"),
        "the unset password is a note: {}",
        r.stdout
    );
    let (code, v) = check_json(&target);
    assert_eq!(code, 0);
    assert_eq!(v["contacts"], 3);
    assert_eq!(v["valid"], 3);
    assert_eq!(v["invalid"], serde_json::json!([]));
    assert_eq!(v["duplicates"], serde_json::json!([]));
    assert_eq!(v["errors"], serde_json::json!([]));
    assert!(v["message_size"]["min"].as_u64().unwrap() > 500);
    assert!(v["message_size"]["max"].as_u64() >= v["message_size"]["min"].as_u64());

    let p = mailroom(&["preview", "--limit", "3"], &target);
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert_eq!(p.stderr.matches("==> message").count(), 3);
    assert!(
        p.stderr
            .contains("==> message 1 of 3: to <ann@example.com> (line 2) <==")
    );

    let again = mailroom(&["init"], &target);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );
    // Nothing was changed by the refused init.
    let r = check(&target);
    assert_eq!(r.code, 0);
}

#[test]
fn check_accepts_the_toml_path_itself() {
    let f = Fixture::base();
    let (code, v) = check_json(&f.path().join("campaign.toml"));
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["valid"], 2);
}

fn first_valid(c: &Campaign) -> Contact {
    c.contacts()
        .unwrap()
        .find_map(|e| match e.unwrap() {
            ContactEntry::Valid(c) => Some(c),
            _ => None,
        })
        .unwrap()
}

fn preview_bytes(dir: &Path, args: &[&str]) -> Vec<u8> {
    let mut a = vec!["preview"];
    a.extend_from_slice(args);
    let r = mailroom(&a, dir);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.raw_stdout
}

fn assert_wire_safe(bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && bytes[i - 1] == b'\r', "bare LF at {i}");
        }
        if *b == b'\r' {
            assert_eq!(bytes.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    for line in bytes.split(|b| *b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len());
    }
}

#[test]
fn preview_is_wire_safe_mime_with_stable_ids() {
    let f = Fixture::base();
    // A 2,000-character word in the body must be encoded, not sent as one line.
    let long = "x".repeat(2000);
    f.write(
        "body.txt.hbs",
        format!("Hello {{{{first_name}}}},\n{long}\n{{{{> footer}}}}\n"),
    );
    let a = preview_bytes(f.path(), &["--to", "bob@bücher.example"]);
    let b = preview_bytes(f.path(), &["--to", "bob@xn--bcher-kva.example"]);
    assert_wire_safe(&a);
    let text = String::from_utf8(a.clone()).unwrap();
    let header_end = text.find("\r\n\r\n").unwrap();
    let headers = &text[..header_end].replace("\r\n ", " ");
    assert!(
        headers.contains("To: \"Bob Stone\" <bob@xn--bcher-kva.example>"),
        "{headers}"
    );
    assert!(
        headers.contains("Subject: =?utf-8?"),
        "non-ASCII subject is RFC 2047: {headers}"
    );
    assert!(headers.contains("MIME-Version: 1.0"));
    assert!(headers.contains("Date: "));
    assert!(headers.contains("Reply-To: team@example.com"));
    assert!(headers.contains("X-Mailroom-Campaign: fixture"));
    assert!(headers.contains("X-Campaign-Ref: fixture/b2"));
    let token = mailroom::campaign::recipient_token("fixture", "bob@xn--bcher-kva.example");
    assert!(headers.contains(&format!("X-Mailroom-Token: {token}")));
    assert!(
        headers.contains(&format!(
            "List-Unsubscribe: <https://example.com/u/{token}>, <mailto:unsubscribe@example.com>"
        )),
        "{headers}"
    );
    assert!(headers.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    assert!(headers.contains("Content-Type: multipart/alternative;"));

    let parsed = mail_parser::MessageParser::default().parse(&a).unwrap();
    assert_eq!(parsed.subject(), Some("Grüße, Bob!"));
    let id = parsed.message_id().unwrap().to_owned();
    assert!(
        id.starts_with(&token) && id.ends_with("@example.com"),
        "{id}"
    );
    // The ledger does not store it: a bounce quoting it is matched by the token read back.
    assert_eq!(
        mailroom::campaign::message_id_token("fixture", &format!("<{id}>")),
        Some(token.as_str())
    );
    assert_eq!(mailroom::campaign::message_id_token("other", &id), None);
    let parsed_b = mail_parser::MessageParser::default().parse(&b).unwrap();
    assert_eq!(
        parsed_b.message_id(),
        Some(id.as_str()),
        "Message-ID stable across runs"
    );
    assert!(parsed.body_text(0).unwrap().contains(&long));
}

#[test]
fn html_body_escapes_values_and_text_body_does_not() {
    let f = Fixture::base();
    f.csv("email,name,first_name,ref\nann@example.com,Ann,\"<b>Tom & Jerry</b>\",\"a&b\"\n");
    let bytes = preview_bytes(f.path(), &[]);
    assert_wire_safe(&bytes);
    let m = mail_parser::MessageParser::default().parse(&bytes).unwrap();
    assert_eq!(m.subject(), Some("Grüße, <b>Tom & Jerry</b>!"));
    let text = m.body_text(0).unwrap();
    assert!(text.contains("Hello <b>Tom & Jerry</b>,"), "{text}");
    assert!(text.contains("your reference: a&b"), "{text}");
    let html = m.body_html(0).unwrap();
    assert!(
        html.contains("<p>Hello &lt;b&gt;Tom &amp; Jerry&lt;/b&gt;,</p>"),
        "{html}"
    );
    assert!(html.contains("your reference: a&amp;b"), "{html}");
}

#[test]
fn preview_selects_by_line_and_limit_and_writes_files() {
    let f = Fixture::base();
    let r = mailroom(&["preview", "--line", "3"], f.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("to <bob@xn--bcher-kva.example> (line 3)"),
        "{}",
        r.stderr
    );
    let r = mailroom(&["preview", "--line", "9"], f.path());
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no CSV record starts at line 9"),
        "{}",
        r.stderr
    );
    let r = mailroom(&["preview", "--to", "nobody@example.com"], f.path());
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no valid contact has the address"),
        "{}",
        r.stderr
    );
    let out = tempfile::tempdir().unwrap();
    let r = mailroom(
        &[
            "preview",
            "--limit",
            "5",
            "--out",
            out.path().to_str().unwrap(),
        ],
        f.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.raw_stdout.is_empty());
    let files: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(files.len(), 2);
    assert_wire_safe(&std::fs::read(out.path().join("line-2.eml")).unwrap());
}

#[test]
fn bom_quotes_embedded_newlines_and_semicolons() {
    let f = Fixture::base();
    f.edit_toml(
        "path = \"contacts.csv\"",
        "path = \"contacts.csv\"\ndelimiter = \";\"",
    );
    f.csv("\u{feff}email;name;first_name;ref;note\n\"ann@example.com\";\"Lee; Ann\";Ann;a;\"multi\nline\"\nbob@example.com;Bob;Bob;b;\n");
    let (code, v) = check_json(f.path());
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["valid"], 2);
    let r = mailroom(&["preview", "--line", "4"], f.path());
    assert_eq!(
        r.code, 0,
        "the second record starts on line 4: {}",
        r.stderr
    );
    assert!(r.stderr.contains("bob@example.com"));
}

#[test]
fn markdown_campaign_renders_html_and_text() {
    let f = Fixture::base();
    f.edit_toml("text = \"body.txt.hbs\"\n", "markdown = \"body.md.hbs\"\n");
    f.edit_toml("html = \"body.html.hbs\"\n", "");
    f.write(
        "body.md.hbs",
        "# Hello {{first_name}}\n\n* ref **{{ref}}**\n\n{{> footer}}\n",
    );
    let bytes = preview_bytes(f.path(), &[]);
    assert_wire_safe(&bytes);
    let m = mail_parser::MessageParser::default().parse(&bytes).unwrap();
    let html = m.body_html(0).unwrap();
    assert!(html.contains("<h1>Hello Ann</h1>"), "{html}");
    assert!(html.contains("<strong>a1</strong>"), "{html}");
    let text = m.body_text(0).unwrap();
    assert!(text.contains("# Hello Ann"), "{text}");
}

#[test]
fn envelope_uses_verp_and_library_render_is_deterministic_per_date() {
    let f = Fixture::base();
    let c = Campaign::load(f.path()).unwrap();
    let contact = first_valid(&c);
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let a = c.render_at(&contact, when).unwrap();
    let b = c.render_at(&contact, when).unwrap();
    assert_eq!(a, b, "same contact and date give the same bytes");
    assert_eq!(a.envelope_to, "ann@example.com");
    assert_eq!(a.envelope_from, format!("bounces+{}@example.com", a.token));
    assert_eq!(c.config().store.path, c.root().join("mailroom.db"));
    assert!(c.config().contacts.path.is_absolute());
}

#[test]
fn examples_newsletter_checks_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/newsletter");
    let (code, v) = check_json(&dir);
    assert_eq!(code, 0, "{v:#}");
    assert!(v["valid"].as_u64().unwrap() >= 3);
}

#[test]
fn long_unbreakable_header_values_are_encoded_not_overlong() {
    let f = Fixture::base();
    let x = "x".repeat(1200);
    let y = "y".repeat(1200);
    f.csv(format!(
        "email,name,first_name,ref\nann@example.com,Ann,{x},{y}\n"
    ));
    let bytes = preview_bytes(f.path(), &[]);
    assert_wire_safe(&bytes);
    let m = mail_parser::MessageParser::default().parse(&bytes).unwrap();
    assert_eq!(m.subject(), Some(format!("Grüße, {x}!").as_str()));
    assert_eq!(
        m.header_raw("X-Campaign-Ref").map(|v| v.len() > 1200),
        Some(true),
        "the header is present and carries the whole value"
    );
}

#[test]
fn header_only_csv_is_a_contact_problem() {
    let f = Fixture::base();
    f.csv("email,name,first_name,ref\n");
    let (code, v) = check_json(f.path());
    assert_eq!(code, 1);
    assert_eq!(v["contacts"], 0);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no contacts"),
        "{v:#}"
    );
}

#[test]
fn crlf_csv_keeps_record_lines() {
    let f = Fixture::base();
    f.csv("email,name,first_name,ref\r\nann@example.com,Ann,Ann,a\r\nbroken,B,B,b\r\nbob@example.com,Bob,Bob,b\r\ncarl@example.com,C,C,\"x\r\ny\"\r\ndan-no-at,D,D,d\r\n");
    let (code, v) = check_json(f.path());
    assert_eq!(code, 1);
    assert_eq!(v["valid"], 2);
    let lines: Vec<u64> = invalid_reasons(&v).into_iter().map(|(l, _)| l).collect();
    assert_eq!(lines, vec![3, 5, 7]);
}

#[test]
fn check_notes_a_body_without_a_visible_unsubscribe_link() {
    let f = Fixture::base();
    let (_, v) = check_json(f.path());
    assert!(
        !v["notes"].to_string().contains("visible unsubscribe link"),
        "{v:#}"
    );
    f.write("partials/footer.hbs", "Example Ltd, 1 Example Street\n");
    let (code, v) = check_json(f.path());
    assert_eq!(code, 0, "a note, not a failure");
    assert!(
        v["notes"].to_string().contains("visible unsubscribe link"),
        "{v:#}"
    );
}

/// Deterministic fuzz: 600 rows with hostile fragments in every column. Each row either fails
/// with a reason or renders to a message whose header block holds exactly the expected fields.
#[test]
fn hostile_values_never_change_the_header_structure() {
    const PIECES: &[&str] = &[
        "\r\n",
        "\n",
        "\r",
        "\u{0}",
        "\u{7}",
        "\u{85}",
        "\u{2028}",
        "\t",
        "Bcc: eve@evil.example",
        "\r\nBcc: eve@evil.example",
        ":",
        ";",
        "\"",
        "<",
        ">",
        ",",
        "=?utf-8?q?=0D=0A?=",
        "é",
        "😀",
        " ",
        "a",
        "Z",
        "\\",
        "--",
        ".",
    ];
    let mut seed: u64 = 0x5eed_cafe_f00d;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % n
    };
    let field = |next: &mut dyn FnMut(usize) -> usize| {
        let mut s = String::new();
        for _ in 0..next(5) {
            s.push_str(PIECES[next(PIECES.len())]);
        }
        s
    };
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut csv = String::from("email,name,first_name,ref\n");
    for i in 0..600 {
        let row = [
            format!("user{i}@example.com"),
            field(&mut next),
            field(&mut next),
            field(&mut next),
        ];
        csv.push_str(&row.iter().map(|f| quote(f)).collect::<Vec<_>>().join(","));
        csv.push('\n');
    }
    let f = Fixture::base();
    f.csv(csv);
    let c = Campaign::load(f.path()).unwrap();
    let expected = [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "x-campaign-ref",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "list-id",
        "x-mailroom-campaign",
        "x-mailroom-token",
        "mime-version",
        "content-type",
    ];
    let (mut ok, mut rejected) = (0, 0);
    for entry in c.contacts().unwrap() {
        let contact = match entry.unwrap() {
            ContactEntry::Valid(c) => c,
            ContactEntry::Invalid { reason, .. } => {
                assert!(reason.contains("display name would contain"), "{reason}");
                rejected += 1;
                continue;
            }
            ContactEntry::Duplicate { .. } => panic!("no duplicates were generated"),
        };
        let r = match c.render(&contact) {
            Ok(r) => r,
            Err(e) => {
                assert!(e.row_reason().unwrap().contains("would contain"), "{e}");
                rejected += 1;
                continue;
            }
        };
        ok += 1;
        assert_wire_safe(&r.bytes);
        let text = String::from_utf8(r.bytes).unwrap();
        let head = &text[..text.find("\r\n\r\n").unwrap()];
        let mut names: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                continue;
            }
            let (name, _) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header: {line:?}"));
            names.push(name.to_ascii_lowercase());
        }
        assert_eq!(names, expected, "{head}");
        assert!(head.is_ascii(), "headers are 7-bit: {head}");
    }
    assert!(
        ok > 50 && rejected > 50,
        "both outcomes exercised: {ok} ok, {rejected} rejected"
    );
}

#[test]
fn injection_reason_names_the_column_the_subject_uses() {
    let f = Fixture::base();
    // `aaa` (unused, sorts first) and `first_name` both hold a line break; the subject uses
    // first_name, so the reason must name first_name, not the first column that has one.
    f.csv("email,name,first_name,ref,aaa\nann@example.com,Ann,\"A\nB\",r,\"z\ny\"\n");
    let (_, v) = check_json(f.path());
    assert_eq!(
        invalid_reasons(&v),
        vec![(
            2,
            "line 2: the subject would contain a line break (from column `first_name`)".into()
        )]
    );
}

/// The first valid contact with `fields` replaced (address included).
fn with_values(c: &Campaign, email: &str, fields: &[(&str, &str)]) -> mailroom::campaign::Contact {
    let mut contact = first_valid(c);
    contact.email = email.to_owned();
    for (k, v) in fields {
        contact.fields.insert((*k).to_owned(), (*v).to_owned());
    }
    contact
}

/// A header's value, unfolded.
fn header(message: &str, name: &str) -> String {
    let head = message
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .replace("\r\n ", " ");
    head.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_owned()
}

#[test]
fn values_in_unsubscribe_urls_and_mailtos_are_encoded_as_uri_components() {
    let f = Fixture::base();
    f.edit_toml(
        "url = \"https://example.com/u/{{token}}\"\nmailto = \"unsubscribe@example.com\"",
        "url = \"https://example.com/u/{{email}}?t={{token}}\"\nmailto = \"unsub+{{first_name}}@example.com\"",
    );
    let c = Campaign::load(f.path()).unwrap();
    // A valid address that would otherwise move the one-click target to another path and
    // query; a name that would otherwise turn the mailto into another address.
    let hostile = with_values(
        &c,
        "x/admin/delete?all=1#@example.com",
        &[("first_name", "x@evil.example?cc=boss@corp.example")],
    );
    let r = c.render(&hostile).unwrap();
    let text = String::from_utf8(r.bytes).unwrap();
    let list = header(&text, "List-Unsubscribe");
    let token = mailroom::campaign::recipient_token("fixture", "x/admin/delete?all=1#@example.com");
    assert_eq!(
        list,
        format!(
            "<https://example.com/u/x%2Fadmin%2Fdelete%3Fall%3D1%23%40example.com?t={token}>, \
             <mailto:unsub+x%40evil.example%3Fcc%3Dboss%40corp.example@example.com>"
        )
    );
    // The token still works as before.
    let plain = with_values(&c, "ann@example.com", &[("first_name", "Ann")]);
    let text = String::from_utf8(c.render(&plain).unwrap().bytes).unwrap();
    let token = mailroom::campaign::recipient_token("fixture", "ann@example.com");
    assert!(
        header(&text, "List-Unsubscribe").starts_with(&format!(
            "<https://example.com/u/ann%40example.com?t={token}>"
        )),
        "{text}"
    );
}

#[test]
fn values_in_markdown_campaigns_stay_text() {
    let f = Fixture::base();
    f.edit_toml(
        "text = \"body.txt.hbs\"\nhtml = \"body.html.hbs\"",
        "markdown = \"issue.md.hbs\"",
    );
    f.write(
        "issue.md.hbs",
        "# Hello\n\n{{first_name}}\n\nSee [our site](https://example.com), {{first_name}}.\n",
    );
    let c = Campaign::load(f.path()).unwrap();
    let hostile = "# big [Verify](javascript:alert(1)) ![](https://tracker.example/p.gif) <b>x</b>";
    let contact = with_values(&c, "ann@example.com", &[("first_name", hostile)]);
    let r = c.render(&contact).unwrap();
    let message = mail_parser::MessageParser::default()
        .parse(&r.bytes)
        .unwrap();
    let html = message.body_html(0).unwrap().into_owned();
    // The template's own link is a link; nothing from the value is.
    assert_eq!(html.matches("<a ").count(), 1, "{html}");
    assert!(html.contains("href=\"https://example.com\""), "{html}");
    for live in ["href=\"javascript:", "<img", "<b>", "<h1>big", "<h1># big"] {
        assert!(!html.contains(live), "{live} in {html}");
    }
    // The value is still there, as text.
    assert!(
        html.contains("# big [Verify](javascript:alert(1))"),
        "{html}"
    );
    assert_eq!(
        html.matches("<h1>").count(),
        1,
        "only the template's heading: {html}"
    );
    assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "{html}");
}

#[test]
fn a_campaign_file_that_is_not_toml_is_refused_by_what_it_looks_like() {
    let f = Fixture::base();
    for (file, what) in [
        ("contacts.csv", "this looks like a contacts file"),
        ("body.txt.hbs", "this looks like a template"),
        ("mailroom.db", "this looks like a ledger"),
    ] {
        let e = Campaign::load(&f.path().join(file))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{file}: {what}, not a campaign.toml")),
            "{e}"
        );
        assert!(e.contains("Pass the campaign's folder"), "{e}");
        assert!(!e.contains("TOML syntax"), "{e}");
    }
    // Any name ending in .toml, or without an extension, is read as the campaign's TOML.
    std::fs::copy(f.path().join("campaign.toml"), f.path().join("spring.TOML")).unwrap();
    std::fs::copy(f.path().join("campaign.toml"), f.path().join("campaign")).unwrap();
    Campaign::load(&f.path().join("spring.TOML")).unwrap();
    Campaign::load(&f.path().join("campaign")).unwrap();
}

#[test]
fn checking_a_row_builds_its_headers_and_renders_bodies_only_when_asked_or_when_they_vary() {
    let f = Fixture::base();
    // A body that fails for every row: `each` over a text (a helper that does not exist, or
    // one given too few arguments, is refused when the campaign loads).
    f.write(
        "body.txt.hbs",
        "Hi {{first_name}} {{#each ref}}x{{/each}}\n",
    );
    let c = Campaign::load(f.path()).unwrap();
    assert!(!c.bodies_vary_by_row());
    let row = first_valid(&c);
    assert!(c.render(&row).is_err());
    // Without bodies the check passes (headers are fine); with bodies it fails as render does.
    c.check_row(&row, false).unwrap();
    assert!(c.check_row(&row, true).is_err());
    // A header problem is caught without bodies.
    let mut bad = row.clone();
    bad.fields
        .insert("first_name".into(), "Ann\r\nBcc: all@example.com".into());
    let e = c.check_row(&bad, false).unwrap_err();
    assert!(e.row_reason().unwrap().contains("line break"), "{e}");

    // A body that looks a name up from a value can fail for one row only: it is always rendered.
    f.write("body.txt.hbs", "Hi {{lookup this ref}}\n");
    let c = Campaign::load(f.path()).unwrap();
    assert!(c.bodies_vary_by_row());
    let mut row = first_valid(&c);
    row.fields.insert("ref".into(), "no_such_column".into());
    assert!(c.check_row(&row, false).is_err());
}
