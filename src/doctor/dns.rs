//! `mailroom doctor CAMPAIGN --dns`: the DNS preflight against the Gmail / Yahoo / Microsoft
//! bulk-sender rules, for the From domain, the envelope (Return-Path) domain and the DKIM
//! domain: SPF, the DKIM key records (and that they match the configured keys), DMARC and
//! alignment, a way back for bounces (MX or A), free-mail From addresses, and the unsubscribe
//! rules the campaign itself decides. docs/authentication.md lists every rule.
//!
//! It owns turning lookups into findings (each with the record or config line that fixes it);
//! the lookups are `dns::Resolver`'s, the verdict table is `verdict`'s. It must not send mail
//! or open an SMTP connection, and a lookup without an answer is always "could not check".

pub mod dkim;
pub mod dmarc;
pub mod spf;
pub mod verdict;

use std::time::Duration;

use serde::Serialize;

use crate::dkim::Signer;
use crate::dns::Resolver;
pub use verdict::{Finding, Row, RowStatus, Status, Topic};

/// The whole preflight may take this long; then it stops and says it could not check.
pub const TOTAL_TIME: Duration = Duration::from_secs(30);

/// Free-mail providers whose DMARC policy rejects mail sent as them from elsewhere (and a
/// few more whose users often try): a From at these domains fails through any other relay.
pub const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.uk",
    "yahoo.fr",
    "ymail.com",
    "rocketmail.com",
    "aol.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "mail.com",
    "proton.me",
    "protonmail.com",
    "yandex.com",
    "yandex.ru",
    "zoho.com",
];

/// What the preflight needs from a campaign.
#[derive(Debug, Clone)]
pub struct Options {
    pub from_domain: String,
    pub envelope_domain: String,
    /// `[smtp] host`, to tell a provider's own relay from a third party's.
    pub relay_host: String,
    /// `[unsubscribe] url` is set (List-Unsubscribe + List-Unsubscribe-Post).
    pub one_click_unsubscribe: bool,
    /// A body template shows `{{unsubscribe_url}}` (or another unsubscribe link).
    pub visible_unsubscribe_link: bool,
}

/// The preflight's result; `--json` prints exactly this.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub resolver: String,
    pub from_domain: String,
    pub envelope_domain: String,
    pub dkim_domains: Vec<String>,
    pub findings: Vec<Finding>,
    pub verdict: Vec<Row>,
    /// 0 met, 1 not met, 2 could not check.
    pub exit_code: u8,
}

impl Report {
    pub fn to_text(&self) -> String {
        let title = format!(
            "mailroom doctor --dns: From {}, envelope {}, DKIM {} (resolver {})",
            self.from_domain,
            self.envelope_domain,
            if self.dkim_domains.is_empty() {
                "signed by the relay".to_owned()
            } else {
                self.dkim_domains.join(", ")
            },
            self.resolver
        );
        verdict::to_text(&title, &self.findings, &self.verdict)
    }
}

/// Runs every check, bounded by [`TOTAL_TIME`].
pub async fn run(resolver: &Resolver, options: &Options, signer: Option<&Signer>) -> Report {
    let dkim_domains: Vec<String> = signer
        .map(|s| {
            let mut d: Vec<String> = s.signatures().map(|p| p.domain.clone()).collect();
            d.dedup();
            d
        })
        .unwrap_or_default();
    let findings = match tokio::time::timeout(
        TOTAL_TIME,
        findings(resolver, options, signer, &dkim_domains),
    )
    .await
    {
        Ok(f) => f,
        Err(_) => vec![Finding::new(
            Topic::Dmarc,
            &options.from_domain,
            Status::CouldNotCheck,
            format!(
                "the lookups did not finish within {} s (resolver {})",
                TOTAL_TIME.as_secs(),
                resolver.label()
            ),
        )],
    };
    let rows = verdict::rows(&findings);
    Report {
        resolver: resolver.label().to_owned(),
        from_domain: options.from_domain.clone(),
        envelope_domain: options.envelope_domain.clone(),
        dkim_domains,
        exit_code: verdict::exit_code(&findings),
        findings,
        verdict: rows,
    }
}

async fn findings(
    resolver: &Resolver,
    o: &Options,
    signer: Option<&Signer>,
    dkim_domains: &[String],
) -> Vec<Finding> {
    let mut domains = vec![o.envelope_domain.clone(), o.from_domain.clone()];
    domains.extend(dkim_domains.iter().cloned());
    domains.dedup();
    let mut unique = Vec::new();
    for d in domains {
        if !unique.contains(&d) {
            unique.push(d);
        }
    }
    let spf_checks = futures_util::future::join_all(unique.iter().map(|d| spf::check(resolver, d)));
    let key_checks = async {
        match signer {
            Some(s) => Some(dkim::check_keys(resolver, s).await),
            None => None,
        }
    };
    let (spfs, keys, dmarc, bounces) = futures_util::join!(
        spf_checks,
        key_checks,
        dmarc::check(resolver, &o.from_domain),
        bounce_path(resolver, &o.envelope_domain),
    );
    let mut out = Vec::new();
    for s in &spfs {
        out.push(spf_finding(s, s.domain == o.envelope_domain));
    }
    match &keys {
        Some(keys) => {
            for k in keys {
                out.extend(key_findings(k));
            }
        }
        None => out.push(
            Finding::new(
                Topic::Dkim,
                &o.from_domain,
                Status::NotCheckable,
                "no [dkim] in campaign.toml: the relay must sign every message",
            )
            .detail("confirm it: send one message to a mailbox you own, download it as received (Gmail: \"Show original\", then \"Download original\"), and run `mailroom doctor --inspect FILE.eml`")
            .fix("[dkim] domain = \"FROM DOMAIN\", selector = \"…\", private_key_file = \"…\" (see `mailroom dkim keygen`), or have the relay sign with d= aligned with From"),
        ),
    }
    out.push(dmarc_finding(&dmarc));
    out.push(alignment(resolver, o, &dmarc, dkim_domains).await);
    out.push(bounces);
    out.push(free_mail(o));
    out.extend(unsubscribe(o));
    out.push(
        Finding::new(Topic::Tls, &o.relay_host, Status::NotCheckable, "TLS from the relay to each recipient's MX is the relay's choice")
            .detail("mailroom itself sends only over TLS; `doctor --inspect` on a received copy shows every hop"),
    );
    out.push(Finding::new(
        Topic::Ptr,
        &o.relay_host,
        Status::NotCheckable,
        "forward-confirmed reverse DNS of the relay's sending address (the address is the relay's; see a received copy's Received header)",
    ));
    out.push(Finding::new(
        Topic::Complaints,
        &o.from_domain,
        Status::NotCheckable,
        "spam complaint rate (Gmail Postmaster Tools; Yahoo's feedback loop)",
    ));
    out
}

fn spf_finding(s: &spf::SpfReport, envelope: bool) -> Finding {
    let role = if envelope {
        "envelope domain"
    } else {
        "not the envelope domain"
    };
    let fix_record = format!(
        "{}. 3600 IN TXT \"v=spf1 include:YOUR-RELAY'S-SPF-DOMAIN -all\"",
        s.domain
    );
    if let Some(e) = &s.failed {
        return Finding::new(
            Topic::Spf,
            &s.domain,
            Status::CouldNotCheck,
            format!("SPF: could not check: {e}"),
        );
    }
    match s.records.len() {
        0 if envelope => {
            return Finding::new(
                Topic::Spf,
                &s.domain,
                Status::Fail,
                format!("SPF: no v=spf1 record ({role})"),
            )
            .fix(fix_record);
        }
        0 => {
            return Finding::new(
                Topic::Spf,
                &s.domain,
                Status::Info,
                format!(
                    "SPF: no v=spf1 record ({role}: receivers check SPF on the envelope domain)"
                ),
            );
        }
        1 => {}
        n => {
            let mut f = Finding::new(
                Topic::Spf,
                &s.domain,
                Status::Fail,
                format!(
                    "SPF: {n} v=spf1 records; receivers treat that as no SPF at all (permerror)"
                ),
            )
            .fix(format!(
                "keep one TXT record at {}: merge the others into it",
                s.domain
            ));
            for r in &s.records {
                f = f.detail(format!("record: {r}"));
            }
            return f;
        }
    }
    let record = &s.records[0];
    let mut status = Status::Pass;
    let mut notes = Vec::new();
    let mut fix = None;
    if s.lookups > spf::MAX_LOOKUPS {
        status = Status::Fail;
        notes.push(format!(
            "{} DNS lookups, more than the {} receivers allow (permerror)",
            s.lookups,
            spf::MAX_LOOKUPS
        ));
        fix = Some(format!(
            "cut {} lookups from {}'s SPF: replace include:/a/mx with ip4:/ip6: ranges, or drop services you no longer use",
            s.lookups - spf::MAX_LOOKUPS,
            s.domain
        ));
    }
    for p in &s.problems {
        status = Status::Fail;
        notes.push(p.clone());
    }
    match s.ending {
        Some(spf::Ending::Pass) => {
            status = Status::Fail;
            notes.push("ends in +all: anyone may send as this domain".into());
            fix = Some(format!(
                "{}. 3600 IN TXT \"{}\"",
                s.domain,
                record.replace("+all", "-all")
            ));
        }
        Some(spf::Ending::Neutral) => {
            status = status.max(Status::Warn);
            notes.push("ends in ?all (or no all): mail from anywhere is neutral, as if there were no SPF; use ~all or -all".into());
        }
        Some(spf::Ending::Fail | spf::Ending::SoftFail) | None => {}
    }
    let ending = match s.ending {
        Some(spf::Ending::Fail) => "-all",
        Some(spf::Ending::SoftFail) => "~all",
        Some(spf::Ending::Neutral) => "?all",
        Some(spf::Ending::Pass) => "+all",
        None => "redirect",
    };
    let summary = if notes.is_empty() {
        format!(
            "SPF: {} DNS lookups of {}, ends in {ending} ({role})",
            s.lookups,
            spf::MAX_LOOKUPS
        )
    } else {
        format!("SPF: {} ({role})", notes.join("; "))
    };
    let mut f = Finding::new(Topic::Spf, &s.domain, status, summary)
        .detail(format!("record: {record}"))
        .detail(format!("mechanisms: {}", s.terms.join(" ")));
    if !s.counted.is_empty() {
        f = f.detail(format!("lookups: {}", s.counted.join(", ")));
    }
    f.fix = fix;
    f
}

fn key_findings(k: &dkim::KeyCheck) -> Vec<Finding> {
    use dkim::Published;
    let subject = k.name.as_str();
    let publish = format!("publish: {}", k.expected_record);
    let mut out = Vec::new();
    let size = |kind: crate::dkim::KeyKind| {
        match kind {
        crate::dkim::KeyKind::Rsa { bits } if bits < 1024 => Some(
            Finding::new(Topic::Dkim, subject, Status::Fail, format!("DKIM: the published key is RSA {bits}-bit; receivers reject keys under 1024 bits"))
                .fix(format!("make a 2048-bit key (`mailroom dkim keygen --algorithm rsa2048`) and {publish}")),
        ),
        crate::dkim::KeyKind::Rsa { bits } if bits < 2048 => Some(Finding::new(
            Topic::Dkim,
            subject,
            Status::Warn,
            format!("DKIM: the published key is RSA {bits}-bit; 2048 bits is the recommended minimum (RFC 8301)"),
        )),
        _ => None,
    }
    };
    match &k.published {
        Published::Matches { kind, record } => {
            out.push(
                Finding::new(Topic::Dkim, subject, Status::Pass, format!("DKIM: the published {kind} key verifies a signature made with the configured key"))
                    .detail(format!("record: {record}")),
            );
            out.extend(size(*kind));
        }
        Published::Mismatch {
            kind,
            record,
            reason,
        } => {
            out.push(
                Finding::new(
                    Topic::Dkim,
                    subject,
                    Status::Fail,
                    format!("DKIM: the published key does NOT match the configured key ({reason})"),
                )
                .detail(format!("published: {record}"))
                .fix(publish.clone()),
            );
            out.extend(kind.and_then(size));
        }
        Published::Missing => out.push(
            Finding::new(
                Topic::Dkim,
                subject,
                Status::Fail,
                "DKIM: no key record at this name (the selector is not published)",
            )
            .fix(publish),
        ),
        Published::Invalid { record, reason } => out.push(
            Finding::new(
                Topic::Dkim,
                subject,
                Status::Fail,
                format!("DKIM: the record is not a usable key record ({reason})"),
            )
            .detail(format!("published: {record}"))
            .fix(publish),
        ),
        Published::Revoked { record } => out.push(
            Finding::new(
                Topic::Dkim,
                subject,
                Status::Fail,
                "DKIM: the key is revoked (empty p=)",
            )
            .detail(format!("published: {record}"))
            .fix(publish),
        ),
        Published::LookupFailed { error } => out.push(Finding::new(
            Topic::Dkim,
            subject,
            Status::CouldNotCheck,
            format!("DKIM: could not check: {error}"),
        )),
    }
    out
}

fn dmarc_finding(d: &dmarc::DmarcReport) -> Finding {
    if let Some(e) = &d.failed {
        return Finding::new(
            Topic::Dmarc,
            &d.from_domain,
            Status::CouldNotCheck,
            format!("DMARC: could not check: {e}"),
        );
    }
    let Some(record) = &d.record else {
        return Finding::new(
            Topic::Dmarc,
            &d.from_domain,
            Status::Fail,
            "DMARC: no record for the From domain or its organisational domain (Gmail, Yahoo and Microsoft require one from bulk senders)",
        )
        .fix(format!(
            "_dmarc.{}. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@{}\"",
            d.organisational_domain, d.organisational_domain
        ));
    };
    let policy = d.policy.as_deref().unwrap_or("none");
    let mut status = Status::Pass;
    let mut f = Finding::new(
        Topic::Dmarc,
        &d.from_domain,
        Status::Pass,
        format!(
            "DMARC: p={policy} at _dmarc.{}{}{}",
            d.found_at.as_deref().unwrap_or(""),
            d.pct.map_or_else(String::new, |p| format!(", pct={p}")),
            if d.rua.is_empty() {
                String::new()
            } else {
                format!(", rua={}", d.rua.join(","))
            }
        ),
    )
    .detail(format!("record: {record}"))
    .detail(format!(
        "organisational domain: {}; alignment asked: dkim {}, spf {}",
        d.organisational_domain,
        d.adkim.as_deref().unwrap_or("relaxed"),
        d.aspf.as_deref().unwrap_or("relaxed")
    ));
    if policy == "unspecified" {
        status = Status::Fail;
        f = f.detail("the record has no valid p= tag").fix(format!(
            "_dmarc.{}. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@{}\"",
            d.organisational_domain, d.organisational_domain
        ));
    }
    if d.pct.is_some_and(|p| p < 100) {
        status = status.max(Status::Warn);
        f = f.detail("pct below 100: the policy applies to part of the failing mail only (DMARCbis drops pct)");
    }
    if d.rua.is_empty() {
        status = status.max(Status::Warn);
        f = f.detail("no rua=: you get no aggregate reports of who sends as this domain");
    }
    if d.testing {
        f = f.detail("t=y: test mode, the policy is applied one step weaker");
    }
    f.status = status;
    f
}

async fn alignment(
    resolver: &Resolver,
    o: &Options,
    d: &dmarc::DmarcReport,
    dkim_domains: &[String],
) -> Finding {
    let from = o.from_domain.as_str();
    let org = d.organisational_domain.as_str();
    let spf_al = dmarc::alignment(resolver, &o.envelope_domain, from, org).await;
    let mut dkim_al = Vec::new();
    for dd in dkim_domains {
        dkim_al.push((dd, dmarc::alignment(resolver, dd, from, org).await));
    }
    let failed = std::iter::once(&spf_al)
        .chain(dkim_al.iter().map(|(_, a)| a))
        .find_map(|a| a.as_ref().err());
    if let Some(e) = failed {
        return Finding::new(
            Topic::Alignment,
            from,
            Status::CouldNotCheck,
            format!("alignment: could not check: {e}"),
        );
    }
    let ok = |a: &dmarc::Aligned, strict: bool| if strict { a.strict } else { a.relaxed };
    let word = |a: &dmarc::Aligned| match (a.strict, a.relaxed) {
        (true, _) => "aligned (strict and relaxed)",
        (false, true) => "aligned (relaxed only)",
        _ => "NOT aligned",
    };
    let spf_al = spf_al.unwrap_or(dmarc::Aligned {
        strict: false,
        relaxed: false,
    });
    let spf_ok = ok(&spf_al, d.spf_strict());
    let mut details = vec![format!(
        "envelope {}: {}{}",
        o.envelope_domain,
        word(&spf_al),
        if d.spf_strict() {
            "; the record asks strict"
        } else {
            ""
        }
    )];
    let mut dkim_ok = false;
    for (dd, a) in &dkim_al {
        let a = a.clone().unwrap_or(dmarc::Aligned {
            strict: false,
            relaxed: false,
        });
        dkim_ok |= ok(&a, d.dkim_strict());
        details.push(format!(
            "DKIM d={dd}: {}{}",
            word(&a),
            if d.dkim_strict() {
                "; the record asks strict"
            } else {
                ""
            }
        ));
    }
    let (status, summary) = if dkim_ok && spf_ok {
        (
            Status::Pass,
            "alignment: the From domain is aligned with both the DKIM d= and the envelope domain",
        )
    } else if dkim_ok {
        (
            Status::Pass,
            "alignment: the From domain is aligned with the DKIM d= (DMARC passes on DKIM; SPF is not aligned)",
        )
    } else if dkim_domains.is_empty() && spf_ok {
        (
            Status::Pass,
            "alignment: the envelope domain is aligned with From (DMARC can pass on SPF); the relay's DKIM d= is not known from here",
        )
    } else if dkim_domains.is_empty() {
        (
            Status::NotCheckable,
            "alignment: the envelope domain is not aligned with From, so DMARC depends on the relay signing with an aligned d= (check a received copy with --inspect)",
        )
    } else if spf_ok {
        (
            Status::Pass,
            "alignment: the envelope domain is aligned with From (DMARC passes on SPF); the DKIM d= is not aligned",
        )
    } else {
        (
            Status::Fail,
            "alignment: neither the DKIM d= nor the envelope domain is aligned with From: DMARC fails for every message",
        )
    };
    let mut f = Finding::new(Topic::Alignment, from, status, summary);
    f.details = details;
    if status != Status::Pass {
        f.fix = Some(format!(
            "[dkim] domain = \"{from}\" (with its key published at SELECTOR._domainkey.{from}), or [bounces] return_path = \"bounces+{{token}}@{from}\""
        ));
    }
    if d.policy.as_deref() == Some("reject") && status == Status::Fail {
        f = f.detail("the policy is p=reject: receivers refuse these messages");
    }
    f
}

async fn bounce_path(resolver: &Resolver, domain: &str) -> Finding {
    let fix = format!("{domain}. 3600 IN MX 10 YOUR-MAIL-SERVER.");
    match resolver.mx(domain).await {
        Err(e) => Finding::new(Topic::Bounces, domain, Status::CouldNotCheck, format!("MX: could not check: {e}")),
        Ok(mx) if mx.iter().any(|m| m.exchange.is_empty() || m.exchange == ".") => Finding::new(
            Topic::Bounces,
            domain,
            Status::Fail,
            "MX: a null MX (RFC 7505): the envelope domain accepts no mail, so bounces are lost",
        )
        .fix(fix),
        Ok(mx) if !mx.is_empty() => {
            let list: Vec<String> = mx.iter().map(|m| format!("{} {}", m.preference, m.exchange)).collect();
            Finding::new(Topic::Bounces, domain, Status::Pass, format!("MX: {}", list.join(", ")))
        }
        Ok(_) => match resolver.addresses(domain).await {
            Err(e) => Finding::new(Topic::Bounces, domain, Status::CouldNotCheck, format!("A: could not check: {e}")),
            Ok(ips) if !ips.is_empty() => Finding::new(
                Topic::Bounces,
                domain,
                Status::Pass,
                format!("no MX, but an address ({}) receives as the implicit MX (RFC 5321 §5.1)", ips[0]),
            ),
            Ok(_) => Finding::new(
                Topic::Bounces,
                domain,
                Status::Fail,
                "MX: neither an MX nor an address record: bounces to the envelope domain cannot come back",
            )
            .fix(fix),
        },
    }
}

fn free_mail(o: &Options) -> Finding {
    let from = o.from_domain.as_str();
    if !FREE_MAIL.contains(&from) {
        return Finding::new(
            Topic::FreeMail,
            from,
            Status::Pass,
            "the From domain is not a free-mail provider's",
        );
    }
    let stem = from.split('.').next().unwrap_or(from);
    let own_relay = o.relay_host.to_ascii_lowercase().contains(stem);
    if own_relay {
        Finding::new(
            Topic::FreeMail,
            from,
            Status::Warn,
            format!(
                "From is a {from} address sent through {}: allowed for personal mail, not for bulk mail",
                o.relay_host
            ),
        )
    } else {
        Finding::new(
            Topic::FreeMail,
            from,
            Status::Fail,
            format!("From is a {from} address sent through {}, another provider's relay: {from}'s DMARC (p=reject or quarantine) makes receivers refuse it", o.relay_host),
        )
        .fix("[campaign] from = \"Name <news@A-DOMAIN-YOU-OWN>\"")
    }
}

fn unsubscribe(o: &Options) -> Vec<Finding> {
    let mut v = Vec::new();
    v.push(if o.one_click_unsubscribe {
        Finding::new(
            Topic::Unsubscribe,
            &o.from_domain,
            Status::Pass,
            "List-Unsubscribe with List-Unsubscribe-Post (RFC 8058 one-click) on every message",
        )
    } else {
        Finding::new(
            Topic::Unsubscribe,
            &o.from_domain,
            Status::Fail,
            "no one-click unsubscribe: Gmail and Yahoo require it from bulk senders",
        )
        .fix("[unsubscribe] url = \"https://YOUR-SITE/unsubscribe/{{token}}\"")
    });
    v.push(if o.visible_unsubscribe_link {
        Finding::new(
            Topic::Unsubscribe,
            &o.from_domain,
            Status::Pass,
            "the body shows an unsubscribe link",
        )
    } else {
        Finding::new(
            Topic::Unsubscribe,
            &o.from_domain,
            Status::Warn,
            "no visible unsubscribe link in the body (Gmail asks for one besides the header)",
        )
        .fix("put <a href=\"{{unsubscribe_url}}\">Unsubscribe</a> in the body template")
    });
    v
}
