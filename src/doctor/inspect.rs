//! `mailroom doctor --inspect FILE.eml`: reads a message as a mailbox received it (Gmail's
//! "Show original" download, an .eml saved from any client) and reports what the receiving
//! side recorded: its `Authentication-Results` (spf, dkim, dmarc and the domains they were
//! about, RFC 8601), whether each `Received` hop used TLS, and whether the authenticated
//! domains are aligned with From, in the same verdict form as `doctor --dns`. This is how a
//! sender whose relay signs confirms it.
//!
//! Pure: no DNS, no network. Only the topmost Authentication-Results counts (RFC 8601 §5: the
//! ones further down may have been forged before the message arrived).

use serde::Serialize;

use super::dns::{Finding, Row, Status, Topic, verdict};

/// One `method=result` of an Authentication-Results header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthResult {
    pub method: String,
    pub result: String,
    /// `ptype.property=value` pairs, e.g. `header.d=example.com`, `smtp.mailfrom=a@b`.
    pub properties: Vec<(String, String)>,
}

impl AuthResult {
    fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One `Received` hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub from: Option<String>,
    pub by: Option<String>,
    /// `with` protocol (ESMTPS, ESMTPSA, SMTP, LMTP, …).
    pub with: Option<String>,
    /// `Some(true)` TLS seen, `Some(false)` plain SMTP, `None` cannot tell (local hand-offs).
    pub tls: Option<bool>,
}

/// What the received copy says.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from_domain: Option<String>,
    /// The authserv-id of the topmost Authentication-Results (who checked).
    pub checked_by: Option<String>,
    pub results: Vec<AuthResult>,
    /// Newest first, as in the message.
    pub hops: Vec<Hop>,
    /// `d=`/`s=` of the message's DKIM-Signature headers.
    pub signatures: Vec<(String, String)>,
    pub findings: Vec<Finding>,
    pub verdict: Vec<Row>,
    pub exit_code: u8,
}

impl Report {
    pub fn to_text(&self) -> String {
        let title = format!(
            "mailroom doctor --inspect: From {}, checked by {}",
            self.from_domain.as_deref().unwrap_or("(none)"),
            self.checked_by
                .as_deref()
                .unwrap_or("(no Authentication-Results)")
        );
        verdict::to_text(&title, &self.findings, &self.verdict)
    }
}

/// Unfolded header fields named `name` (case-insensitive), top to bottom.
fn fields(headers: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in headers.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
            continue;
        }
        if let Some(done) = current.take() {
            out.push(done);
        }
        if let Some((n, v)) = line.split_once(':')
            && n.trim().eq_ignore_ascii_case(name)
        {
            current = Some(v.trim().to_owned());
        }
    }
    out.extend(current);
    out
}

/// Removes RFC 5322 comments (nested parentheses) and splits on `;` outside quotes.
fn clauses(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let (mut depth, mut quoted) = (0usize, false);
    for c in value.chars() {
        match c {
            '"' if depth == 0 => {
                quoted = !quoted;
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            ';' if depth == 0 && !quoted => out.push(String::new()),
            _ if depth == 0 => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
            _ => {}
        }
    }
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// RFC 8601 §2.2: `authserv-id [version]; method=result props; …` (or `none`).
pub fn parse_authentication_results(value: &str) -> (String, Vec<AuthResult>) {
    let mut parts = clauses(value).into_iter();
    let id = parts
        .next()
        .and_then(|p| p.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    let results = parts
        .filter_map(|clause| {
            let mut words = clause.split_whitespace();
            let (method, result) = words.next()?.split_once('=')?;
            let properties = words
                .filter_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some(AuthResult {
                method: method.to_ascii_lowercase(),
                result: result.to_ascii_lowercase(),
                properties,
            })
        })
        .collect();
    (id, results)
}

/// A `Received` field's from/by/with and whether it shows TLS (Postfix "using TLSv1.3",
/// Gmail/Exchange "with ESMTPS"/"version=TLS1_3", RFC 3848 "ESMTPS"/"ESMTPSA").
pub fn parse_received(value: &str) -> Hop {
    let words: Vec<&str> = value.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| w.eq_ignore_ascii_case(key))
            .and_then(|i| words.get(i + 1))
            .map(|w| w.trim_end_matches(';').to_owned())
    };
    let with = after("with");
    let lower = value.to_ascii_lowercase();
    let tls_words = lower.contains("using tls")
        || lower.contains("version=tls")
        || lower.contains("tls1_")
        || lower.contains("(tls");
    let from = after("from");
    let tls = match with.as_deref().map(str::to_ascii_uppercase) {
        // No `from`: a server handing the message to itself (Gmail's topmost "by 2002:… with
        // SMTP id"), not a hop over a network.
        _ if from.is_none() && !tls_words => None,
        Some(w) if w.starts_with("ESMTPS") || w.starts_with("UTF8SMTPS") || w == "SMTPS" => {
            Some(true)
        }
        _ if tls_words => Some(true),
        Some(w) if w == "LMTP" || w == "LOCAL" || w.starts_with("HTTP") || w == "MAPI" => None,
        Some(w) if w.contains("SMTP") => Some(false),
        _ => None,
    };
    Hop {
        from,
        by: after("by"),
        with,
        tls,
    }
}

fn domain_of(address_or_domain: &str) -> String {
    let s = address_or_domain.trim().trim_matches(['<', '>']);
    s.rsplit_once('@')
        .map_or(s, |(_, d)| d)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether `bytes` start like a message: its first line (after an mbox `From ` separator, as
/// some clients save one) is a header field, `Name: value`, with a field name of printable
/// ASCII (RFC 5322 §2.2). A file that does not is not a received copy (an attachment, a PDF,
/// the body alone): inspecting it would only find that nothing can be checked.
pub fn looks_like_a_message(bytes: &[u8]) -> bool {
    let mut lines = bytes.split(|&b| b == b'\n');
    let mut first = lines.next().unwrap_or_default();
    if first.starts_with(b"From ") {
        first = lines.next().unwrap_or_default();
    }
    let Some(colon) = first.iter().position(|&b| b == b':') else {
        return false;
    };
    // Some writers put spaces before the colon (obsolete syntax, RFC 5322 §4.5).
    std::str::from_utf8(first[..colon].trim_ascii_end())
        .is_ok_and(crate::bounce::mime::is_field_name)
}

/// Reads `bytes` (a whole message, or only its header section) and builds the report.
pub fn inspect(bytes: &[u8]) -> Report {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(bytes.len());
    let headers = String::from_utf8_lossy(&bytes[..end]);
    let from_domain = fields(&headers, "From").first().map(|f| {
        let addr = f.rsplit_once('<').map_or(f.as_str(), |(_, a)| a);
        domain_of(addr.trim_end_matches('>'))
    });
    let ar = fields(&headers, "Authentication-Results");
    let (checked_by, results) = match ar.first() {
        Some(v) => {
            let (id, r) = parse_authentication_results(v);
            (Some(id), r)
        }
        None => (None, Vec::new()),
    };
    let hops: Vec<Hop> = fields(&headers, "Received")
        .iter()
        .map(|r| parse_received(r))
        .collect();
    let signatures: Vec<(String, String)> = fields(&headers, "DKIM-Signature")
        .iter()
        .map(|v| {
            let tags = super::dns::dkim::tags(v);
            let get = |n: &str| {
                tags.iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("d"), get("s"))
        })
        .collect();
    let findings = findings(
        from_domain.as_deref(),
        checked_by.as_deref(),
        &results,
        &hops,
        &signatures,
    );
    let verdict = verdict::rows(&findings);
    Report {
        exit_code: verdict::exit_code(&findings),
        from_domain,
        checked_by,
        results,
        hops,
        signatures,
        findings,
        verdict,
    }
}

fn findings(
    from: Option<&str>,
    checked_by: Option<&str>,
    results: &[AuthResult],
    hops: &[Hop],
    signatures: &[(String, String)],
) -> Vec<Finding> {
    let from = from.unwrap_or("");
    let mut out = Vec::new();
    if checked_by.is_none() {
        let mut f = Finding::new(
            Topic::Dkim,
            from,
            Status::NotCheckable,
            "no Authentication-Results header: this copy was not checked by a receiving mailbox (download it from the mailbox it reached, e.g. Gmail's \"Show original\")",
        );
        for (d, s) in signatures {
            f = f.detail(format!(
                "the message carries a DKIM-Signature with d={d} s={s}"
            ));
        }
        out.push(f);
    }
    fn of<'a>(
        results: &'a [AuthResult],
        method: &'static str,
    ) -> impl Iterator<Item = &'a AuthResult> {
        results.iter().filter(move |r| r.method == method)
    }
    for r in of(results, "spf") {
        let domain = r
            .property("smtp.mailfrom")
            .or(r.property("smtp.helo"))
            .map(domain_of)
            .unwrap_or_default();
        let status = if r.result == "pass" {
            Status::Pass
        } else {
            Status::Fail
        };
        out.push(
            Finding::new(Topic::Spf, &domain, status, format!("SPF {} for {domain}", r.result))
                .fix_if(status == Status::Fail, "authorise the relay in the envelope domain's SPF record (its provider documents the include:)"),
        );
    }
    let mut dkim_aligned = false;
    for r in of(results, "dkim") {
        let domain = r
            .property("header.d")
            .map(str::to_owned)
            .or_else(|| r.property("header.i").map(domain_of))
            .unwrap_or_default();
        let aligned = crate::dkim::is_aligned(&domain, from);
        dkim_aligned |= aligned && r.result == "pass";
        let status = if r.result == "pass" {
            Status::Pass
        } else {
            Status::Fail
        };
        out.push(
            Finding::new(
                Topic::Dkim,
                &domain,
                status,
                format!(
                    "DKIM {} for d={domain}{}",
                    r.result,
                    r.property("header.s").map_or_else(String::new, |s| format!(" s={s}"))
                ),
            )
            .fix_if(status == Status::Fail, "publish the selector's key record, or fix the key the relay or [dkim] signs with (`mailroom doctor CAMPAIGN --dns` checks it)"),
        );
    }
    if checked_by.is_some() && of(results, "dkim").next().is_none() {
        out.push(
            Finding::new(
                Topic::Dkim,
                from,
                Status::Fail,
                "no DKIM result: the message was not signed",
            )
            .fix("[dkim] in campaign.toml (see `mailroom dkim keygen`), or have the relay sign"),
        );
    }
    let mut spf_aligned = false;
    for r in of(results, "spf") {
        let domain = r
            .property("smtp.mailfrom")
            .map(domain_of)
            .unwrap_or_default();
        spf_aligned |= r.result == "pass" && crate::dkim::is_aligned(&domain, from);
    }
    for r in of(results, "dmarc") {
        let status = if r.result == "pass" {
            Status::Pass
        } else {
            Status::Fail
        };
        out.push(
            Finding::new(
                Topic::Dmarc,
                r.property("header.from").unwrap_or(from),
                status,
                format!("DMARC {}", r.result),
            )
            .fix_if(
                r.result == "none",
                format!("_dmarc.{from}. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@{from}\""),
            )
            .fix_if(r.result == "fail", "sign with d= equal to the From domain (or its parent), or send with an envelope domain under it"),
        );
    }
    if checked_by.is_some() {
        let (status, summary) = match (dkim_aligned, spf_aligned) {
            (true, true) => (
                Status::Pass,
                "From is aligned with a passing DKIM d= and the SPF domain",
            ),
            (true, false) => (
                Status::Pass,
                "From is aligned with a passing DKIM d= (not with the SPF domain)",
            ),
            (false, true) => (
                Status::Pass,
                "From is aligned with the passing SPF domain (not with a DKIM d=)",
            ),
            (false, false) => (
                Status::Fail,
                "From is aligned with neither a passing DKIM d= nor a passing SPF domain",
            ),
        };
        out.push(
            Finding::new(Topic::Alignment, from, status, summary).fix_if(
                status == Status::Fail,
                format!("[dkim] domain = \"{from}\", or have the relay sign with d={from}"),
            ),
        );
    }
    for (i, hop) in hops.iter().enumerate() {
        let subject = format!(
            "hop {} ({} → {})",
            hops.len() - i,
            hop.from.as_deref().unwrap_or("?"),
            hop.by.as_deref().unwrap_or("?")
        );
        let with = hop.with.as_deref().unwrap_or("?");
        let f = match hop.tls {
            Some(true) => Finding::new(Topic::Tls, &subject, Status::Pass, format!("TLS (with {with})")),
            Some(false) => Finding::new(Topic::Tls, &subject, Status::Fail, format!("no TLS (with {with})"))
                .fix("the relay (or the server named first) must use STARTTLS on this hop; ask its operator"),
            None => Finding::new(Topic::Tls, &subject, Status::Info, format!("local hand-off or unknown (with {with})")),
        };
        out.push(f);
    }
    out
}

trait FixIf {
    fn fix_if(self, cond: bool, fix: impl Into<String>) -> Self;
}

impl FixIf for Finding {
    fn fix_if(self, cond: bool, fix: impl Into<String>) -> Finding {
        if cond { self.fix(fix) } else { self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GMAIL: &str = "Delivered-To: reader@gmail.com\r\n\
Received: by 2002:a05:6a10:1234 with SMTP id abc;\r\n        Tue, 1 Dec 2026 10:00:01 -0800 (PST)\r\n\
Authentication-Results: mx.google.com;\r\n       dkim=pass header.i=@bakery.example header.s=mail2026 header.b=AbC;\r\n       spf=pass (google.com: domain of bounces+x@bakery.example designates 192.0.2.1 as permitted sender) smtp.mailfrom=\"bounces+x@bakery.example\";\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=bakery.example\r\n\
Received: from relay.example.net (relay.example.net. [192.0.2.1])\r\n        by mx.google.com with ESMTPS id x;\r\n        Tue, 1 Dec 2026 10:00:00 -0800 (PST)\r\n\
Authentication-Results: forged.example; dkim=fail\r\n\
From: Bakery <news@bakery.example>\r\n\r\nbody\r\n";

    #[test]
    fn only_a_file_that_starts_with_a_header_field_is_a_message() {
        assert!(looks_like_a_message(GMAIL.as_bytes()));
        // Saved by an mbox writer, with its separator line first.
        let mboxed = format!("From MAILER-DAEMON Tue Dec  1 10:00:00 2026\n{GMAIL}");
        assert!(looks_like_a_message(mboxed.as_bytes()));
        assert!(looks_like_a_message(
            b"Subject : obsolete space before the colon\n\nhi"
        ));
        for not in [
            &b""[..],
            b"\n\n",
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
            b"Hello Ann,\n\nthanks for your order: it ships today.\n",
            b": no name\n",
            b"\x00\x01\x02From: a@b.example\n",
        ] {
            assert!(
                !looks_like_a_message(not),
                "{:?}",
                String::from_utf8_lossy(not)
            );
        }
    }

    #[test]
    fn a_copy_no_mailbox_checked_is_not_called_an_all_clear() {
        let r = inspect(b"From: Ann <ann@bakery.example>\r\nSubject: hi\r\n\r\nbody\r\n");
        assert_eq!(r.exit_code, 0, "not checkable does not fail");
        let text = r.to_text();
        assert!(text.contains("NOTHING could be checked"), "{text}");
        assert!(!text.contains("is met"), "{text}");
        // With results, the usual verdict.
        assert!(
            inspect(GMAIL.as_bytes())
                .to_text()
                .contains("every rule that can be checked")
        );
    }

    #[test]
    fn gmail_show_original_passes() {
        let r = inspect(GMAIL.as_bytes());
        assert_eq!(r.checked_by.as_deref(), Some("mx.google.com"));
        assert_eq!(r.from_domain.as_deref(), Some("bakery.example"));
        let methods: Vec<(&str, &str)> = r
            .results
            .iter()
            .map(|a| (a.method.as_str(), a.result.as_str()))
            .collect();
        assert_eq!(
            methods,
            [("dkim", "pass"), ("spf", "pass"), ("dmarc", "pass")]
        );
        assert_eq!(r.hops[1].tls, Some(true));
        // Google's own hand-off "by … with SMTP id" has no `from`: not a network hop.
        assert_eq!(r.hops[0].tls, None);
        assert_eq!(r.exit_code, 0, "{}", r.to_text());
    }

    #[test]
    fn comments_and_quotes_do_not_split_clauses() {
        let (id, r) = parse_authentication_results(
            "mx.example; spf=pass (a; b) smtp.mailfrom=\"x;y@z.example\"; dkim=none",
        );
        assert_eq!(id, "mx.example");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].property("smtp.mailfrom"), Some("x;y@z.example"));
    }

    #[test]
    fn received_tls_forms() {
        let postfix = parse_received(
            "from h (localhost [127.0.0.1]) (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) by mx.mailroom.test (Postfix) with ESMTPSA id 1",
        );
        assert_eq!(postfix.tls, Some(true));
        assert_eq!(postfix.by.as_deref(), Some("mx.mailroom.test"));
        assert_eq!(
            parse_received("from a by b with ESMTP id 1").tls,
            Some(false)
        );
        assert_eq!(parse_received("by b with LMTP id 1").tls, None);
    }

    #[test]
    fn a_copy_without_results_is_not_checkable_not_failed() {
        let r =
            inspect(b"From: a@b.example\r\nDKIM-Signature: v=1; d=b.example; s=s1; b=x\r\n\r\nx");
        assert_eq!(r.exit_code, 0);
        assert!(r.findings[0].details[0].contains("d=b.example s=s1"));
    }
}
