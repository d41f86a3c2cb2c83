//! Authenticated mail end to end, with real parts only: the loopback DNS fixture server
//! (dnsmasq, `tests/fixtures/dns/zones.conf`), python3-dkim as the independent verifier, and the
//! copies the real Postfix delivered into its Maildirs. No mock resolver, no sleeps.
//!
//! - DKIM: `preview` output and Postfix-delivered copies verify with python3-dkim, for RSA,
//!   Ed25519 and dual signatures, non-ASCII and folded headers, HTML+text and Markdown.
//! - `doctor --dns`: one fixture domain per broken rule, the passing domain, an unreachable
//!   resolver; exit codes 0 / 1 / 2.
//! - `send`: refuses a published key that does not match (nothing sent), warns and sends when
//!   the record is missing, says so with --no-dkim-check.
//! - `doctor --inspect` on a delivered copy.
//!
//! Tests needing the rig skip loudly on a laptop and fail under CI=true without it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::auth::{AuthCampaign, Bodies, Signing, dns, mailroom, python_verify};

const CONTACTS: &[&str] = &["ann@example.com", "bob@example.com", "cyd@example.com"];

fn preview_all(c: &AuthCampaign) -> Vec<Vec<u8>> {
    let out = c.path().join("out");
    let (_, err, code) = mailroom(&[
        "preview",
        c.path().to_str().unwrap(),
        "--limit",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3);
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn preview_verifies(signing: Signing, bodies: Bodies, signatures: usize) {
    let Some(dns) = dns() else { return };
    let c = AuthCampaign::new(
        "preview-check",
        "pass.test",
        "pass.test",
        signing,
        bodies,
        &dns,
        "host = \"127.0.0.1\"",
        CONTACTS,
    );
    for message in preview_all(&c) {
        let text = String::from_utf8_lossy(&message);
        assert_eq!(
            text.matches("DKIM-Signature:").count(),
            signatures,
            "{text}"
        );
        assert!(text.contains("List-Id: <news.pass.test>"), "{text}");
        assert!(
            text.contains("Feedback-ID: preview-check:newsletter:mailroom"),
            "{text}"
        );
        // The subject is non-ASCII and long: encoded-words over folded lines.
        assert!(text.contains("Subject: =?utf-8?"), "{text}");
        let (ok, report) = python_verify(&dns, &message);
        assert!(ok, "python3-dkim: {report}\n{text}");
        assert_eq!(
            report.matches("pass d=pass.test").count(),
            signatures,
            "{report}"
        );
    }
}

#[test]
fn preview_signed_with_rsa_verifies_with_python3_dkim() {
    preview_verifies(Signing::Rsa, Bodies::TextAndHtml, 1);
}

#[test]
fn preview_signed_with_ed25519_verifies_with_python3_dkim() {
    preview_verifies(Signing::Ed25519, Bodies::TextAndHtml, 1);
}

#[test]
fn preview_dual_signed_verifies_with_python3_dkim() {
    preview_verifies(Signing::Dual, Bodies::TextAndHtml, 2);
}

#[test]
fn preview_of_a_dual_signed_markdown_campaign_verifies_with_python3_dkim() {
    preview_verifies(Signing::Dual, Bodies::Markdown, 2);
}

#[test]
fn a_signature_covers_the_bytes_so_a_changed_body_fails_python3_dkim() {
    let Some(dns) = dns() else { return };
    let c = AuthCampaign::new(
        "tamper",
        "pass.test",
        "pass.test",
        Signing::Dual,
        Bodies::TextAndHtml,
        &dns,
        "host = \"127.0.0.1\"",
        CONTACTS,
    );
    let message = preview_all(&c).remove(0);
    let tampered = String::from_utf8_lossy(&message).replacen("Stollen", "Stolen!", 1);
    let (ok, report) = python_verify(&dns, tampered.as_bytes());
    assert!(!ok, "a changed body still verified: {report}");
}

// --- the copy Postfix delivered -------------------------------------------------------------

struct Rig {
    smtp: String,
    maildirs: PathBuf,
    domain: String,
}

fn rig() -> Option<Rig> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let Some(host) = var("MAILROOM_TEST_POSTFIX_HOST") else {
        assert!(
            var("CI").as_deref() != Some("true"),
            "CI=true but MAILROOM_TEST_POSTFIX_HOST is not set: source scripts/ci-servers.sh"
        );
        eprintln!("SKIPPED: no Postfix rig (MAILROOM_TEST_POSTFIX_HOST unset)");
        return None;
    };
    let need = |n: &str| var(n).unwrap_or_else(|| panic!("{n} is not set"));
    Some(Rig {
        smtp: format!(
            "host = \"{host}\"\nport = {}\nusername = \"{}\"\npassword_env = \"MAILROOM_TEST_POSTFIX_PASSWORD\"\nca_file = \"{}\"\nhello_name = \"client.mailroom.test\"",
            need("MAILROOM_TEST_POSTFIX_SUBMISSION_PORT"),
            need("MAILROOM_TEST_POSTFIX_USER"),
            need("MAILROOM_TEST_POSTFIX_CA"),
        ),
        maildirs: need("MAILROOM_TEST_POSTFIX_MAILDIR_ROOT").into(),
        domain: need("MAILROOM_TEST_DOMAIN_OK"),
    })
}

/// The delivered copy holding `marker` in `user`'s Maildir, waiting for local delivery (it
/// happens after the 250) up to 30 s.
fn delivered(rig: &Rig, user: &str, marker: &str) -> Vec<u8> {
    let dir = rig.maildirs.join(&rig.domain).join(user).join("new");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                if String::from_utf8_lossy(&bytes).contains(marker) {
                    return bytes;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no copy with {marker} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn postfix_copy_verifies(signing: Signing, bodies: Bodies, signatures: usize) {
    let (Some(dns), Some(rig)) = (dns(), rig()) else {
        return;
    };
    let name = unique("dkim-postfix");
    let to = [
        format!("alice@{}", rig.domain),
        format!("bob@{}", rig.domain),
    ];
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let c = AuthCampaign::new(
        &name,
        "pass.test",
        "pass.test",
        signing,
        bodies,
        &dns,
        &rig.smtp,
        &to,
    );
    let (out, err, code) = mailroom(&["send", c.path().to_str().unwrap(), "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("matches the configured key"), "{err}");
    for user in ["alice", "bob"] {
        let copy = delivered(&rig, user, &name);
        let text = String::from_utf8_lossy(&copy);
        // Postfix added its own headers on top; the signatures still cover what was sent.
        assert!(text.starts_with("Return-Path:"), "{text}");
        assert_eq!(text.matches("DKIM-Signature:").count(), signatures);
        let (ok, report) = python_verify(&dns, &copy);
        assert!(
            ok,
            "python3-dkim on the copy Postfix delivered: {report}\n{text}"
        );
        assert_eq!(report.matches("pass d=").count(), signatures, "{report}");
    }
}

#[test]
fn postfix_delivered_rsa_copy_verifies_with_python3_dkim() {
    postfix_copy_verifies(Signing::Rsa, Bodies::TextAndHtml, 1);
}

#[test]
fn postfix_delivered_ed25519_copy_verifies_with_python3_dkim() {
    postfix_copy_verifies(Signing::Ed25519, Bodies::TextAndHtml, 1);
}

#[test]
fn postfix_delivered_dual_signed_markdown_copy_verifies_with_python3_dkim() {
    postfix_copy_verifies(Signing::Dual, Bodies::Markdown, 2);
}

#[test]
fn inspect_reads_a_postfix_delivered_copy() {
    let (Some(dns), Some(rig)) = (dns(), rig()) else {
        return;
    };
    let name = unique("inspect");
    let to = format!("carol@{}", rig.domain);
    let c = AuthCampaign::new(
        &name,
        "pass.test",
        "pass.test",
        Signing::Rsa,
        Bodies::TextAndHtml,
        &dns,
        &rig.smtp,
        &[&to],
    );
    let (out, err, code) = mailroom(&["send", c.path().to_str().unwrap(), "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let copy = delivered(&rig, "carol", &name);
    let file = c.path().join("received.eml");
    std::fs::write(&file, &copy).unwrap();
    let (out, err, code) = mailroom(&["doctor", "--inspect", file.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Submission hop: STARTTLS then AUTH ("using TLSv1.x", "with ESMTPSA").
    let hops = v["hops"].as_array().unwrap();
    assert!(hops.iter().any(|h| h["tls"] == true), "{out}");
    assert_eq!(v["signatures"][0][0], "pass.test", "{out}");
    // The rig's Postfix does not check DKIM: no Authentication-Results, so "not checkable".
    assert!(v["checked_by"].is_null(), "{out}");
}

// --- doctor --dns against the fixture zones -------------------------------------------------

struct Case {
    domain: &'static str,
    dkim: &'static str,
    return_path: Option<&'static str>,
    signing: Signing,
    exit: i32,
    /// (topic, status, words in the summary) that must be among the findings.
    finding: (&'static str, &'static str, &'static str),
}

fn preflight(case: &Case) -> serde_json::Value {
    let Some(dns) = dns() else {
        return serde_json::Value::Null;
    };
    let c = AuthCampaign::new(
        "preflight",
        case.domain,
        case.dkim,
        case.signing,
        Bodies::TextAndHtml,
        &dns,
        "host = \"smtp.relay.example\"",
        CONTACTS,
    );
    if let Some(rp) = case.return_path {
        c.edit(
            "[contacts]",
            &format!("[bounces]\nreturn_path = \"{rp}\"\n\n[contacts]"),
        );
    }
    let (out, err, code) = mailroom(&["doctor", c.path().to_str().unwrap(), "--dns", "--json"]);
    assert_eq!(code, case.exit, "{}: {out}\n{err}", case.domain);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (topic, status, words) = case.finding;
    let found = v["findings"].as_array().unwrap().iter().any(|f| {
        f["topic"] == topic
            && f["status"] == status
            && f["summary"].as_str().unwrap().contains(words)
    });
    assert!(
        found,
        "{}: no {topic}/{status} finding with {words:?}:\n{out}",
        case.domain
    );
    // The text form says the same and never calls a failing run all good.
    let (text, _, _) = mailroom(&["doctor", c.path().to_str().unwrap(), "--dns"]);
    if case.exit != 0 {
        assert!(
            !text.contains("every rule that can be checked from here is met"),
            "{text}"
        );
    }
    v
}

macro_rules! preflights {
    ($($name:ident: $case:expr,)*) => {$(
        #[test]
        fn $name() {
            preflight(&$case);
        }
    )*};
}

preflights! {
    preflight_passes_for_a_domain_that_meets_every_rule: Case { domain: "pass.test", dkim: "pass.test", return_path: None, signing: Signing::Dual, exit: 0, finding: ("dkim", "pass", "Ed25519 key verifies") },
    preflight_fails_without_spf: Case { domain: "nospf.test", dkim: "nospf.test", return_path: None, signing: Signing::Rsa, exit: 1, finding: ("spf", "fail", "no v=spf1 record") },
    preflight_fails_with_two_spf_records: Case { domain: "twospf.test", dkim: "twospf.test", return_path: None, signing: Signing::Rsa, exit: 1, finding: ("spf", "fail", "2 v=spf1 records") },
    preflight_fails_with_eleven_spf_lookups: Case { domain: "lookups.test", dkim: "lookups.test", return_path: None, signing: Signing::Rsa, exit: 1, finding: ("spf", "fail", "11 DNS lookups") },
    preflight_fails_on_plus_all: Case { domain: "plusall.test", dkim: "plusall.test", return_path: None, signing: Signing::Rsa, exit: 1, finding: ("spf", "fail", "+all") },
    preflight_fails_without_dmarc: Case { domain: "nodmarc.test", dkim: "nodmarc.test", return_path: None, signing: Signing::Rsa, exit: 1, finding: ("dmarc", "fail", "no record") },
    preflight_fails_when_p_reject_meets_misaligned_identifiers: Case { domain: "misaligned.test", dkim: "other.test", return_path: Some("bounces+{token}@other.test"), signing: Signing::Rsa, exit: 1, finding: ("alignment", "fail", "neither the DKIM d= nor the envelope domain") },
    preflight_fails_when_the_dkim_key_is_not_published: Case { domain: "nokey.test", dkim: "nokey.test", return_path: None, signing: Signing::Rsa, exit: 1, finding: ("dkim", "fail", "no key record") },
    preflight_fails_when_the_published_key_does_not_match: Case { domain: "wrongkey.test", dkim: "wrongkey.test", return_path: None, signing: Signing::Rsa, exit: 1, finding: ("dkim", "fail", "does NOT match") },
    preflight_warns_about_a_1024_bit_published_key: Case { domain: "weak.test", dkim: "weak.test", return_path: None, signing: Signing::Rsa, exit: 1, finding: ("dkim", "warn", "RSA 1024-bit") },
    preflight_fails_without_mx_or_address: Case { domain: "nomx.test", dkim: "nomx.test", return_path: None, signing: Signing::Rsa, exit: 1, finding: ("bounces", "fail", "neither an MX nor an address") },
    preflight_fails_a_free_mail_from_through_another_relay: Case { domain: "gmail.com", dkim: "gmail.com", return_path: None, signing: Signing::None, exit: 1, finding: ("free_mail", "fail", "another provider's relay") },
    preflight_without_dkim_says_the_relay_must_sign: Case { domain: "pass.test", dkim: "pass.test", return_path: None, signing: Signing::None, exit: 0, finding: ("dkim", "not_checkable", "the relay must sign") },
}

#[test]
fn preflight_verdict_rows_carry_the_fix() {
    let v = preflight(&Case {
        domain: "nodmarc.test",
        dkim: "nodmarc.test",
        return_path: None,
        signing: Signing::Rsa,
        exit: 1,
        finding: ("dmarc", "fail", "no record"),
    });
    if v.is_null() {
        return;
    }
    let row = v["verdict"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["requirement"].as_str().unwrap().starts_with("DMARC"))
        .unwrap();
    assert_eq!(row["status"], "not_met");
    assert_eq!(
        row["fix"],
        "_dmarc.nodmarc.test. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@nodmarc.test\""
    );
}

/// `doctor --dns` for a campaign from `domain` asking `resolver`: it could not check (exit 2)
/// and names the resolver, and no rule is reported failed. Returns the output.
fn doctor_could_not_check(domain: &str, resolver: &str) -> String {
    let c = AuthCampaign::new(
        "could-not-check",
        domain,
        domain,
        Signing::Rsa,
        Bodies::TextAndHtml,
        resolver,
        "host = \"smtp.relay.example\"",
        CONTACTS,
    );
    let (out, err, code) = mailroom(&["doctor", c.path().to_str().unwrap(), "--dns"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("could not check") && out.contains(&format!("resolver {resolver}")),
        "{out}"
    );
    assert!(
        !out.contains("FAIL "),
        "a lookup without an answer is not a failed rule:\n{out}"
    );
    out
}

#[test]
fn an_unreachable_resolver_is_could_not_check_naming_the_resolver() {
    if dns().is_none() {
        return;
    }
    // Nothing answers DNS on port 1: every lookup times out (bounded), none is "missing".
    let out = doctor_could_not_check("pass.test", "127.0.0.1:1");
    assert!(out.contains("COULD NOT CHECK everything"), "{out}");
}

/// The fixture server holds `test` and `com` only and answers REFUSED for anything else: a
/// refusal is "could not check" naming the resolver (exit 2), never a missing record.
#[test]
fn a_refusing_resolver_is_could_not_check_not_a_missing_record() {
    let Some(dns) = dns() else { return };
    let out = doctor_could_not_check("bakery.org", &dns);
    assert!(out.contains("refused by the resolver"), "{out}");
}

#[test]
fn resolver_flag_overrides_the_campaign_setting() {
    let Some(dns) = dns() else { return };
    let c = AuthCampaign::new(
        "flag",
        "pass.test",
        "pass.test",
        Signing::Rsa,
        Bodies::TextAndHtml,
        "127.0.0.1:1",
        "host = \"smtp.relay.example\"",
        CONTACTS,
    );
    let (out, err, code) = mailroom(&[
        "doctor",
        c.path().to_str().unwrap(),
        "--dns",
        "--resolver",
        &dns,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("resolver {dns}")), "{out}");
}

// --- send -----------------------------------------------------------------------------------

/// A campaign whose relay is a closed loopback port: if `send` got as far as connecting, the
/// run would end with a connection error, not the DKIM one.
fn send_to_nowhere(domain: &str) -> (AuthCampaign, String, String, i32) {
    let dns = dns().unwrap();
    let c = AuthCampaign::new(
        "send-check",
        domain,
        domain,
        Signing::Rsa,
        Bodies::TextAndHtml,
        &dns,
        "host = \"127.0.0.1\"\nport = 1\nsecurity = \"none\"",
        CONTACTS,
    );
    let (out, err, code) = mailroom(&["send", c.path().to_str().unwrap(), "--yes"]);
    (c, out, err, code)
}

#[test]
fn send_refuses_a_published_key_that_does_not_match_and_sends_nothing() {
    if dns().is_none() {
        return;
    }
    let (c, out, err, code) = send_to_nowhere("wrongkey.test");
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("does not verify") && err.contains("nothing was sent"),
        "{err}"
    );
    assert!(
        err.contains("rsa._domainkey.wrongkey.test. 3600 IN TXT"),
        "{err}"
    );
    // Refused before the import: no ledger at all.
    assert!(!c.path().join("mailroom.db").exists());
}

#[test]
fn send_warns_and_goes_on_when_the_key_record_is_missing() {
    if dns().is_none() {
        return;
    }
    let (_c, out, err, code) = send_to_nowhere("nokey.test");
    assert!(
        err.contains("warning: DKIM: no key record at rsa._domainkey.nokey.test"),
        "{err}"
    );
    // It went on to the relay (a closed port): the run did not end on the DKIM check.
    assert!(!err.contains("refusing to send"), "{out}\n{err}");
    assert_ne!(code, 0);
}

#[test]
fn no_dkim_check_skips_the_lookup_and_says_so() {
    let Some(dns) = dns() else { return };
    let c = AuthCampaign::new(
        "skip",
        "wrongkey.test",
        "wrongkey.test",
        Signing::Rsa,
        Bodies::TextAndHtml,
        &dns,
        "host = \"127.0.0.1\"\nport = 1\nsecurity = \"none\"",
        CONTACTS,
    );
    let (out, err, _) = mailroom(&[
        "send",
        c.path().to_str().unwrap(),
        "--yes",
        "--no-dkim-check",
    ]);
    assert!(
        err.contains("--no-dkim-check: the published keys were not looked up"),
        "{out}\n{err}"
    );
    assert!(!err.contains("does not verify"), "{err}");
}

#[test]
fn send_refuses_a_dkim_domain_not_aligned_with_from() {
    let Some(dns) = dns() else { return };
    let c = AuthCampaign::new(
        "unaligned",
        "misaligned.test",
        "other.test",
        Signing::Rsa,
        Bodies::TextAndHtml,
        &dns,
        "host = \"127.0.0.1\"\nport = 1\nsecurity = \"none\"",
        CONTACTS,
    );
    let (out, err, code) = mailroom(&["send", c.path().to_str().unwrap(), "--yes"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("not aligned with the From domain misaligned.test"),
        "{err}"
    );
}

#[test]
fn the_private_key_never_reaches_any_output() {
    let Some(dns) = dns() else { return };
    let pem = std::fs::read_to_string(common::auth::key("rsa2048")).unwrap();
    // Lines of the key's base64 body past the first eight: a PKCS#1 key starts with the public
    // modulus (which the published record rightly shows, at the same base64 alignment), and the
    // private exponent and primes follow.
    let secret: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .skip(8)
        .collect();
    assert!(secret.len() > 10);
    let c = AuthCampaign::new(
        "secret",
        "wrongkey.test",
        "wrongkey.test",
        Signing::Rsa,
        Bodies::TextAndHtml,
        &dns,
        "host = \"127.0.0.1\"\nport = 1\nsecurity = \"none\"",
        CONTACTS,
    );
    let p = c.path().to_str().unwrap();
    let mut seen = String::new();
    for args in [
        vec!["check", p],
        vec!["check", p, "--json"],
        vec!["preview", p],
        vec!["send", p, "--yes", "-vv"],
        vec!["doctor", p, "--dns", "--json"],
    ] {
        let (out, err, _) = mailroom(&args);
        seen.push_str(&out);
        seen.push_str(&err);
    }
    // A send that gets as far as the ledger (the key matches; the relay port is closed), with
    // every log line on: neither the output nor the ledger's files hold the key.
    let ok = AuthCampaign::new(
        "secret-ledger",
        "pass.test",
        "pass.test",
        Signing::Rsa,
        Bodies::TextAndHtml,
        &dns,
        "host = \"127.0.0.1\"\nport = 1\nsecurity = \"none\"",
        CONTACTS,
    );
    let (out, err, _) = mailroom(&["send", ok.path().to_str().unwrap(), "--yes", "-vv"]);
    seen.push_str(&out);
    seen.push_str(&err);
    let mut ledger_bytes = Vec::new();
    for entry in std::fs::read_dir(ok.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("mailroom.db") {
            ledger_bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(
        !ledger_bytes.is_empty(),
        "the send created no ledger: {err}"
    );
    let ledger_text = String::from_utf8_lossy(&ledger_bytes);
    assert!(
        ledger_text.contains("ann@example.com"),
        "the scan reads the ledger"
    );
    for line in secret {
        assert!(
            !seen.contains(line),
            "a line of the private key was printed"
        );
        assert!(
            !ledger_text.contains(line),
            "a line of the private key is in the ledger"
        );
    }
}

// --- bad keys and settings: each a clear error with the fix (no DNS needed) ------------------

/// `mailroom check` on a campaign whose `[dkim]` key is `key` installed with `mode` (or no
/// file at all for None): the exit code and the error, with the folder written [DIR].
fn check_with_key(key: Option<(&str, u32)>) -> (i32, String) {
    let c = AuthCampaign::new(
        "keys",
        "pass.test",
        "pass.test",
        Signing::None,
        Bodies::TextAndHtml,
        "127.0.0.1:1",
        "host = \"127.0.0.1\"",
        CONTACTS,
    );
    let file = match key {
        Some((name, mode)) => common::auth::install_key(c.path(), name, mode),
        None => "dkim/missing.pem".to_owned(),
    };
    c.edit(
        "[dns]",
        &format!("[dkim]\ndomain = \"pass.test\"\nselector = \"rsa\"\nprivate_key_file = \"{file}\"\n\n[dns]"),
    );
    let (out, err, code) = mailroom(&["check", c.path().to_str().unwrap()]);
    (code, common::redact_dir(&format!("{out}{err}"), c.path()))
}

macro_rules! bad_keys {
    ($($name:ident: $key:expr,)*) => {$(
        #[test]
        fn $name() {
            let (code, text) = check_with_key($key);
            assert_eq!(code, 2, "{text}");
            insta::assert_snapshot!(text);
        }
    )*};
}

bad_keys! {
    a_missing_key_file_is_refused_with_keygen_as_the_fix: None,
    a_world_readable_key_is_refused_with_chmod_as_the_fix: Some(("rsa2048", 0o644)),
    a_group_readable_key_is_refused: Some(("ed25519", 0o640)),
    an_ecdsa_key_is_refused_as_the_wrong_format: Some(("ec-p256", 0o600)),
    a_1024_bit_rsa_key_is_refused_as_too_short: Some(("rsa1024", 0o600)),
    a_file_that_is_not_a_key_is_refused: Some(("README", 0o600)),
}

#[test]
fn pkcs8_rsa_and_pkcs1_rsa_keys_both_load() {
    for name in ["rsa2048", "rsa2048-pkcs8", "ed25519"] {
        let c = AuthCampaign::new(
            "pkcs",
            "pass.test",
            "pass.test",
            Signing::None,
            Bodies::TextAndHtml,
            "127.0.0.1:1",
            "host = \"127.0.0.1\"",
            CONTACTS,
        );
        let file = common::auth::install_key(c.path(), name, 0o600);
        c.edit("[dns]", &format!("[dkim]\ndomain = \"pass.test\"\nselector = \"rsa\"\nprivate_key_file = \"{file}\"\n\n[dns]"));
        let (out, err, code) = mailroom(&["check", c.path().to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(
            out.contains("dkim       signing with d=pass.test s=rsa"),
            "{out}"
        );
    }
}

#[test]
fn check_reports_a_dkim_domain_unrelated_to_from() {
    let c = AuthCampaign::new(
        "unrelated",
        "pass.test",
        "other.test",
        Signing::Rsa,
        Bodies::TextAndHtml,
        "127.0.0.1:1",
        "host = \"127.0.0.1\"",
        CONTACTS,
    );
    let (out, err, code) = mailroom(&["check", c.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    insta::assert_snapshot!(common::redact_dir(&out, c.path()));
}

#[test]
fn check_warns_when_the_body_has_no_visible_unsubscribe_link() {
    let c = AuthCampaign::new(
        "nolink",
        "pass.test",
        "pass.test",
        Signing::None,
        Bodies::TextAndHtml,
        "127.0.0.1:1",
        "host = \"127.0.0.1\"",
        CONTACTS,
    );
    std::fs::write(c.path().join("body.txt.hbs"), "Hello {{name}}\n").unwrap();
    std::fs::write(c.path().join("body.html.hbs"), "<p>Hello {{name}}</p>\n").unwrap();
    let (out, _, code) = mailroom(&["check", c.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: the body has no visible unsubscribe link"),
        "{out}"
    );
}

#[test]
fn list_id_defaults_to_the_from_address_and_can_be_set() {
    let c = AuthCampaign::new(
        "lists",
        "pass.test",
        "pass.test",
        Signing::None,
        Bodies::TextAndHtml,
        "127.0.0.1:1",
        "host = \"127.0.0.1\"",
        CONTACTS,
    );
    let (out, err, code) = mailroom(&["preview", c.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\r\nList-Id: <news.pass.test>\r\n"), "{out}");
    c.edit(
        "feedback_id",
        "list_id = \"Bakery news <bakery.pass.test>\"\nfeedback_id",
    );
    let (out, err, code) = mailroom(&["preview", c.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\r\nList-Id: Bakery news <bakery.pass.test>\r\n"),
        "{out}"
    );
    assert!(!out.contains("DKIM-Signature"), "{out}");
}

#[test]
fn dkim_keygen_writes_a_private_key_only_its_owner_reads_and_the_record_openssl_derives() {
    use std::os::unix::fs::PermissionsExt as _;
    for (algorithm, k) in [("ed25519", "ed25519"), ("rsa2048", "rsa")] {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let (out, err, code) = mailroom(&[
            "dkim",
            "keygen",
            "--domain",
            "Example.com",
            "--selector",
            "s1",
            "--algorithm",
            algorithm,
            "--out",
            key.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!out.contains(line), "keygen printed the private key");
        }
        let record = out
            .lines()
            .find(|l| l.starts_with("s1._domainkey.example.com. 3600 IN TXT "))
            .unwrap();
        let strings: Vec<&str> = record.split('"').skip(1).step_by(2).collect();
        assert!(strings.iter().all(|s| s.len() <= 255), "{record}");
        let value = strings.concat();
        // openssl, independently: the SubjectPublicKeyInfo (RSA) or its last 32 bytes (Ed25519).
        let der = std::process::Command::new("openssl")
            .args([
                "pkey",
                "-in",
                key.to_str().unwrap(),
                "-pubout",
                "-outform",
                "DER",
            ])
            .output()
            .unwrap()
            .stdout;
        let raw = if k == "ed25519" {
            &der[der.len() - 32..]
        } else {
            &der[..]
        };
        use base64::Engine as _;
        let p = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(value, format!("v=DKIM1; k={k}; p={p}"));
        // The written key loads in a campaign.
        let (_, err2, code2) = mailroom(&[
            "dkim",
            "keygen",
            "--domain",
            "example.com",
            "--selector",
            "s1",
            "--out",
            key.to_str().unwrap(),
        ]);
        assert_eq!(code2, 2, "an existing key must not be overwritten: {err2}");
    }
}

// --- doctor --inspect on mailbox downloads (no network) --------------------------------------

fn inspect_fixture(name: &str) -> (i32, String) {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/inspect/{name}.eml"));
    let (out, err, code) = mailroom(&["doctor", "--inspect", file.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

#[test]
fn inspect_of_a_gmail_download_that_passes_everything() {
    let (code, text) = inspect_fixture("gmail-pass");
    assert_eq!(code, 0, "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn inspect_refuses_a_file_that_is_not_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body-only.eml");
    std::fs::write(&file, "Hello Ann,\n\nyour order ships today.\n").unwrap();
    let (out, err, code) = mailroom(&["doctor", "--inspect", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is not an email message"), "{err}");
    assert!(err.contains("Show original"), "the fix is named: {err}");
    assert!(
        !out.contains("verdict"),
        "no verdict on a file that is not a copy: {out}"
    );
}

#[test]
fn inspect_shows_an_unsigned_copy_with_dmarc_fail_and_a_plain_hop() {
    let (code, text) = inspect_fixture("relay-unsigned");
    assert_eq!(code, 1, "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn send_warns_and_goes_on_when_the_resolver_does_not_answer() {
    let c = AuthCampaign::new(
        "deaf-resolver",
        "pass.test",
        "pass.test",
        Signing::Rsa,
        Bodies::TextAndHtml,
        // Nothing answers DNS on port 1: the check gives up within its bound and sends.
        "127.0.0.1:1",
        "host = \"127.0.0.1\"\nport = 1\nsecurity = \"none\"",
        CONTACTS,
    );
    let (out, err, _) = mailroom(&["send", c.path().to_str().unwrap(), "--yes"]);
    assert!(
        err.contains("warning: DKIM: could not check the published key")
            && err.contains("127.0.0.1:1"),
        "{out}\n{err}"
    );
    assert!(!err.contains("refusing to send"), "{err}");
}
