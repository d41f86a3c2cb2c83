//! What mailbox providers' replies and DSN texts mean, and what to do about them: one data table
//! ([`DIAGNOSES`]), each row with the evidence that identifies it (the provider, a reply or
//! status code, words of the text), its meaning and its fix, and the public page that documents
//! it. `report` shows them under "What the providers are telling you"; the dashboard in its
//! reasons pane.
//!
//! A row's `key` is stored in the ledger with the attempt or event it explains (`diagnosis`),
//! so it is part of the on-disk format: never rename one. Meanings and fixes are read from
//! this table when shown, so they can be improved without touching any ledger.
//!
//! The table is matched in order and the first row that fits wins: provider-specific rows come
//! before the generic ones. Pure: no I/O; the text is read at most [`MAX_TEXT`] bytes deep.

use crate::provider::{self, Provider};

/// How much of a reply or diagnostic is searched for a row's words.
pub const MAX_TEXT: usize = 4096;

/// One thing a provider can be telling you.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diagnosis {
    /// Stable identifier, stored in the ledger.
    pub key: &'static str,
    /// Whose text this is; `None` for replies any system may send.
    pub provider: Option<Provider>,
    /// A short name for tables.
    pub title: &'static str,
    /// What it means.
    pub meaning: &'static str,
    /// What to do about it.
    pub fix: &'static str,
    /// Where it is documented.
    pub source: &'static str,
}

/// The evidence a row needs (all present conditions must hold).
struct Rule {
    diagnosis: Diagnosis,
    /// The reply code, when it must be one of these.
    codes: &'static [u16],
    /// The enhanced status code, when it must be this one (from the reply, or in its text).
    status: Option<&'static str>,
    /// Lowercase words that must all appear in the text.
    all: &'static [&'static str],
    /// Lowercase words of which one must appear (empty: no condition).
    any: &'static [&'static str],
    /// Whether the recipient's provider (or the text's marker) must be the row's: for codes
    /// other systems use with another meaning (Gmail's 4.7.0 and 5.7.1, IANA's 5.7.27 = sender
    /// null MX). Provider-unique codes and markers (5.7.515, TSS04, S3150) need no provider.
    strict: bool,
}

/// What is known about one reply or report.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The recipient's provider (from its domain), if known.
    pub provider: Option<Provider>,
    pub code: Option<u16>,
    /// RFC 3463 enhanced status code.
    pub status: Option<&'a str>,
    /// The reply text or DSN diagnostic.
    pub text: &'a str,
}

macro_rules! row {
    (
        $key:literal, $provider:expr, $title:literal, strict: $strict:expr,
        codes: $codes:expr, status: $status:expr, all: $all:expr, any: $any:expr,
        meaning: $meaning:literal, fix: $fix:literal, source: $source:literal $(,)?
    ) => {
        Rule {
            diagnosis: Diagnosis {
                key: $key,
                provider: $provider,
                title: $title,
                meaning: $meaning,
                fix: $fix,
                source: $source,
            },
            codes: $codes,
            status: $status,
            all: $all,
            any: $any,
            strict: $strict,
        }
    };
}

const MS: Option<Provider> = Some(Provider::Microsoft);
const GOOGLE: Option<Provider> = Some(Provider::Google);
const YAHOO: Option<Provider> = Some(Provider::Yahoo);
const APPLE: Option<Provider> = Some(Provider::Apple);

/// The table, most specific first.
const RULES: &[Rule] = &[
    // ---- Microsoft (Outlook.com, Microsoft 365) ----
    row!("microsoft-5.7.515", MS, "Outlook.com: authentication requirements not met", strict: false,
        codes: &[550], status: Some("5.7.515"), all: &[], any: &[],
        meaning: "Outlook.com rejects mail from high-volume senders whose domain does not pass SPF, DKIM and DMARC (p=none or stronger, aligned with From): enforced since May 2025.",
        fix: "Publish SPF for the envelope (return-path) domain, sign with DKIM for the From domain, publish a DMARC record, and check alignment; then send again.",
        source: "learn.microsoft.com: Outlook.com requirements for high-volume senders (550 5.7.515)"),
    row!("microsoft-s3150", MS, "Outlook.com: sending IP on Microsoft's blocklist", strict: false,
        codes: &[], status: None, all: &[], any: &["s3150", "s3140", "s3114"],
        meaning: "The relay's IP address (or its network) is on Microsoft's own block list (S3150 and related codes): Outlook.com refuses its mail.",
        fix: "Ask your relay's operator to request delisting through Microsoft's delist form (sender.office.com); with your own IP, request it yourself and check it in SNDS.",
        source: "Microsoft: Outlook.com postmaster, delist request (sender.office.com)"),
    row!("microsoft-5.7.606", MS, "Microsoft 365: sending IP banned", strict: false,
        codes: &[], status: Some("5.7.606"), all: &[], any: &[],
        meaning: "Microsoft 365 (Exchange Online Protection) has banned the sending IP address.",
        fix: "Request removal with Microsoft's delist portal (sender.office.com) for the relay's IP, or send through a relay whose IP is not listed.",
        source: "learn.microsoft.com: Use the delist portal to remove yourself from the blocked senders list (5.7.606-649)"),
    row!("microsoft-4.7.650", MS, "Microsoft: rate limited for IP reputation", strict: false,
        codes: &[451, 421, 450], status: Some("4.7.650"), all: &[], any: &[],
        meaning: "Microsoft is temporarily rate limiting the sending IP because of its reputation (a new IP, or complaints).",
        fix: "Send more slowly ([rate] per_domain for Microsoft domains), warm the IP up, and keep complaints down; mailroom retries later.",
        source: "learn.microsoft.com: email non-delivery reports in Exchange Online (4.7.650)"),
    row!("microsoft-5.4.1", MS, "Microsoft 365: recipient does not exist", strict: true,
        codes: &[550], status: Some("5.4.1"), all: &["access denied"], any: &[],
        meaning: "The receiving Microsoft 365 tenant checks addresses at its edge (Directory-Based Edge Blocking): this recipient does not exist there.",
        fix: "Remove the address from the list (a hard bounce suppresses it already).",
        source: "learn.microsoft.com: fix NDR 550 5.4.1 in Exchange Online"),
    // ---- Google (Gmail, Workspace) ----
    row!("gmail-5.7.26", GOOGLE, "Gmail: unauthenticated or failing DMARC", strict: false,
        codes: &[550, 421, 451], status: Some("5.7.26"), all: &[], any: &[],
        meaning: "Gmail blocked the message because the sender is not authenticated (no passing SPF or DKIM), or it fails the From domain's DMARC policy.",
        fix: "Set up SPF and DKIM for your domains, publish DMARC, and make the From domain align with the DKIM d= or the envelope domain.",
        source: "support.google.com/mail/answer/81126 (sender guidelines) and answer/180707"),
    row!("gmail-4.7.26", GOOGLE, "Gmail: unauthenticated, rate limited", strict: false,
        codes: &[421, 451], status: Some("4.7.26"), all: &[], any: &[],
        meaning: "Gmail is rate limiting the message because it is not authenticated with SPF or DKIM.",
        fix: "Authenticate your mail with SPF and DKIM (and DMARC for bulk senders); mailroom retries later.",
        source: "support.google.com/mail/answer/81126 (sender guidelines)"),
    row!("gmail-5.7.27", GOOGLE, "Gmail: SPF did not pass", strict: true,
        codes: &[550, 421, 451], status: None, all: &[], any: &["5.7.27", "4.7.27"],
        meaning: "Gmail refused or rate limited the message because SPF authentication did not pass for the envelope sender's domain.",
        fix: "Add your relay's sending IPs (usually its include: mechanism) to the SPF record of the return-path domain.",
        source: "support.google.com/a/answer/3726730 (SMTP error reference)"),
    row!("gmail-5.7.30", GOOGLE, "Gmail: DKIM did not pass", strict: true,
        codes: &[550, 421, 451], status: None, all: &[], any: &["5.7.30", "4.7.30"],
        meaning: "Gmail refused or rate limited the message because DKIM authentication did not pass.",
        fix: "Sign with DKIM (at the relay or in mailroom), publish the selector's key, and check the signature survives the relay.",
        source: "support.google.com/a/answer/3726730 (SMTP error reference)"),
    row!("gmail-5.7.25", GOOGLE, "Gmail: no PTR for the sending IP", strict: false,
        codes: &[550, 421], status: None, all: &[], any: &["5.7.25", "4.7.25"],
        meaning: "The sending IP address has no reverse DNS (PTR) record, or it does not match forward DNS.",
        fix: "The relay's operator must set a PTR record for the sending IP that resolves back to it.",
        source: "support.google.com/a/answer/3726730 (SMTP error reference)"),
    row!("gmail-4.7.28", GOOGLE, "Gmail: rate limited for unsolicited mail", strict: false,
        codes: &[421, 451, 550], status: None, all: &[], any: &["4.7.28", "5.7.28"],
        meaning: "Gmail sees an unusual rate of unsolicited mail from your IP, domain or DKIM domain and is rate limiting it: usually complaints.",
        fix: "Slow down, stop mailing people who did not opt in, check your spam rate in Postmaster Tools; mailroom backs off and retries.",
        source: "support.google.com/a/answer/3726730 (SMTP error reference)"),
    row!("gmail-4.7.0-reputation", GOOGLE, "Gmail: very low sender reputation", strict: true,
        codes: &[421, 451, 550], status: None, all: &["reputation"], any: &["4.7.0", "5.7.1"],
        meaning: "Gmail considers the message suspicious because of the very low reputation of the sending IP address or domain.",
        fix: "Lower the volume, mail only engaged subscribers, authenticate (SPF, DKIM, DMARC) and watch Postmaster Tools until reputation recovers.",
        source: "support.google.com/mail/answer/188131 (bulk senders)"),
    row!("gmail-4.7.0", GOOGLE, "Gmail: try again later", strict: true,
        codes: &[421, 451], status: Some("4.7.0"), all: &[], any: &[],
        meaning: "Gmail is temporarily deferring your mail (rate limiting, or an unusual pattern): nothing is wrong with the address.",
        fix: "Nothing now: mailroom retries with back-off. If it persists, send more slowly to Gmail ([rate] per_domain) and check Postmaster Tools.",
        source: "support.google.com/a/answer/3726730 (SMTP error reference)"),
    row!("gmail-5.7.1-spam", GOOGLE, "Gmail: blocked as likely spam", strict: true,
        codes: &[550, 554], status: None, all: &[], any: &["unsolicited", "spam"],
        meaning: "Gmail's filters classified the message as likely unsolicited mail and blocked it.",
        fix: "Review the content and links, send only to people who opted in, make unsubscribing easy, and keep the spam rate under 0.1%.",
        source: "support.google.com/mail/answer/81126 (sender guidelines)"),
    row!("gmail-message-id", GOOGLE, "Gmail: invalid Message-ID", strict: true,
        codes: &[550], status: None, all: &["message-id"], any: &[],
        meaning: "Gmail refuses messages without a valid Message-ID header (RFC 5322).",
        fix: "Check that your relay does not strip or rewrite Message-ID (mailroom always writes one).",
        source: "support.google.com/a/answer/3726730 (SMTP error reference)"),
    row!("gmail-4.2.1", GOOGLE, "Gmail: recipient receiving too fast", strict: true,
        codes: &[450, 421], status: Some("4.2.1"), all: &[], any: &[],
        meaning: "The Gmail user is receiving mail at a rate that prevents more messages for now.",
        fix: "Nothing: mailroom retries later.",
        source: "support.google.com/a/answer/3726730 (SMTP error reference)"),
    // ---- Yahoo / AOL ----
    row!("yahoo-tss04", YAHOO, "Yahoo: deferred for volume or complaints", strict: false,
        codes: &[], status: None, all: &["tss04"], any: &[],
        meaning: "Yahoo is temporarily deferring mail from your IP because of unexpected volume or user complaints.",
        fix: "Slow down, mail only engaged subscribers, join Yahoo's Complaint Feedback Loop and keep complaints under 0.3%; mailroom retries later.",
        source: "senders.yahooinc.com/smtp-error-codes (TSS04)"),
    row!("yahoo-ts01", YAHOO, "Yahoo: deferred for user complaints", strict: false,
        codes: &[], status: None, all: &[], any: &["[ts01]", "[ts02]"],
        meaning: "Yahoo is temporarily deferring mail from your IP because of user complaints.",
        fix: "Reduce complaints (opt-in only, visible unsubscribe), join the Complaint Feedback Loop; mailroom retries later.",
        source: "senders.yahooinc.com/smtp-error-codes (TS01, TS02)"),
    row!("yahoo-ts03", YAHOO, "Yahoo: permanently deferred", strict: false,
        codes: &[], status: None, all: &[], any: &["[ts03]", "[tss09]", "[tss11]"],
        meaning: "Yahoo will not accept mail from this IP at all (retrying will not succeed): its reputation is too poor.",
        fix: "Stop sending to Yahoo from this IP; fix list hygiene and complaints, then contact Yahoo Sender Support through senders.yahooinc.com.",
        source: "senders.yahooinc.com/smtp-error-codes (TS03, TSS09, TSS11)"),
    row!("yahoo-5.7.9", YAHOO, "Yahoo: not authenticated / DMARC", strict: true,
        codes: &[550, 554], status: Some("5.7.9"), all: &[], any: &[],
        meaning: "Yahoo refused the message for policy reasons: the sender is not authenticated or it fails DMARC.",
        fix: "Authenticate with SPF and DKIM, publish DMARC and align the From domain.",
        source: "senders.yahooinc.com/best-practices and smtp-error-codes"),
    row!("yahoo-ph01", YAHOO, "Yahoo: refused for policy reasons", strict: false,
        codes: &[], status: None, all: &["[ph01]"], any: &[],
        meaning: "Yahoo refused the message for policy reasons (content or sending pattern).",
        fix: "Review the content and the list's consent; check Yahoo's sender best practices.",
        source: "senders.yahooinc.com/smtp-error-codes (PH01)"),
    row!("yahoo-bl21", YAHOO, "Yahoo: IP listed at Spamhaus", strict: false,
        codes: &[], status: None, all: &[], any: &["[bl21]", "[bl22]", "[bl23]"],
        meaning: "Yahoo refuses connections from the sending IP because it is listed on a Spamhaus block list.",
        fix: "Look the IP up at check.spamhaus.org and follow its removal steps (or ask your relay's operator to).",
        source: "senders.yahooinc.com/smtp-error-codes (BL21-BL23)"),
    // ---- Apple iCloud ----
    row!("icloud-cs01", APPLE, "iCloud: refused by content policy", strict: false,
        codes: &[], status: None, all: &["[cs01]"], any: &[],
        meaning: "iCloud Mail rejected the message because of its local policy on content.",
        fix: "Review content and links; check the iCloud postmaster page and authentication (SPF, DKIM, DMARC).",
        source: "support.apple.com/102322 (iCloud Mail postmaster information)"),
    row!("icloud-hm08", APPLE, "iCloud: refused by reputation policy", strict: false,
        codes: &[], status: None, all: &[], any: &["[hm07]", "[hm08]"],
        meaning: "iCloud Mail rejected the message because of its local policy on the sender's reputation.",
        fix: "Check authentication, complaints and list hygiene; the iCloud postmaster page explains how to contact Apple.",
        source: "support.apple.com/102322 (iCloud Mail postmaster information)"),
    // ---- Comcast ----
    row!("comcast-bl", Some(Provider::Comcast), "Comcast: IP blocklisted", strict: false,
        codes: &[], status: None, all: &[], any: &["bl000000", "bl000001", "bl000010"],
        meaning: "Comcast refuses the sending IP: it is on Comcast's or a third-party block list.",
        fix: "Follow the link in the reply (postmaster.comcast.net) to request removal.",
        source: "postmaster.comcast.net (error codes)"),
    row!("comcast-rl", Some(Provider::Comcast), "Comcast: rate limited", strict: false,
        codes: &[], status: None, all: &[], any: &["rl000001", "rl000010"],
        meaning: "Comcast is rate limiting the sending IP.",
        fix: "Send more slowly to Comcast; mailroom retries later.",
        source: "postmaster.comcast.net (error codes)"),
    // ---- Security gateways ----
    row!("proofpoint-reputation", Some(Provider::Proofpoint), "Proofpoint: sending IP reputation", strict: false,
        codes: &[], status: None, all: &[], any: &["proofpoint dynamic reputation", "ipcheck.proofpoint.com"],
        meaning: "A Proofpoint gateway in front of the recipient's company blocks the sending IP for its reputation.",
        fix: "Check the IP at ipcheck.proofpoint.com and request removal there.",
        source: "ipcheck.proofpoint.com"),
    row!("mimecast-blocked", Some(Provider::Mimecast), "Mimecast: envelope blocked", strict: false,
        codes: &[], status: None, all: &[], any: &["envelope blocked", "rejected by header based"],
        meaning: "A Mimecast gateway blocked the message by the recipient organisation's policy (sender or spoofing rules).",
        fix: "Ask the recipient's IT team to allow your sending domain; check SPF and DMARC for anti-spoofing rules.",
        source: "community.mimecast.com: SMTP error codes"),
    // ---- Anyone ----
    row!("spamhaus-listed", None, "IP on a Spamhaus block list", strict: false,
        codes: &[], status: None, all: &["spamhaus"], any: &[],
        meaning: "The receiving system refused the sending IP because a Spamhaus block list names it.",
        fix: "Look the IP up at check.spamhaus.org and follow its removal steps (or ask your relay's operator to).",
        source: "check.spamhaus.org"),
    row!("spam-content", None, "Refused as spam", strict: false,
        codes: &[550, 554, 552], status: None, all: &[], any: &["spam", "unsolicited", "junk"],
        meaning: "The receiving system's filter classified the message as spam.",
        fix: "Review content and links, mail only people who opted in, and authenticate the mail.",
        source: "RFC 3463 X.7.1 (delivery not authorized) as used by filters"),
    row!("mailbox-full", None, "Mailbox full", strict: false,
        codes: &[], status: None, all: &[], any: &["x.2.2", "mailbox full", "over quota", "quota exceeded"],
        meaning: "The recipient's mailbox is over its quota: a soft bounce, nothing wrong with you.",
        fix: "Nothing now; if it keeps happening across campaigns, the mailbox is abandoned: remove it.",
        source: "RFC 3463 X.2.2"),
    row!("user-unknown", None, "Mailbox does not exist", strict: false,
        codes: &[], status: None, all: &[], any: &["x.1.1", "user unknown", "does not exist", "no such user"],
        meaning: "The address does not exist at the receiving system: a hard bounce.",
        fix: "Remove it from the list (mailroom has suppressed it); many of them mean the list is old or was bought.",
        source: "RFC 3463 X.1.1"),
];

/// The diagnosis of a spam complaint (an ARF report), which carries no reply to match.
pub const COMPLAINT: Diagnosis = Diagnosis {
    key: "complaint",
    provider: None,
    title: "Recipient reported the message as spam",
    meaning: "A recipient pressed \"report spam\"; the provider's feedback loop told you (ARF). Each complaint lowers your reputation there.",
    fix: "The address is suppressed. Keep complaints below 0.1%: mail only people who opted in, say who you are, and make unsubscribing one click.",
    source: "RFC 5965; Gmail and Yahoo sender guidelines",
};

/// Every diagnosis, in table order (the complaint last).
pub fn all() -> impl Iterator<Item = &'static Diagnosis> {
    RULES
        .iter()
        .map(|r| &r.diagnosis)
        .chain(std::iter::once(&COMPLAINT))
}

/// The diagnosis with this key.
pub fn by_key(key: &str) -> Option<&'static Diagnosis> {
    all().find(|d| d.key == key)
}

/// The first row of the table that fits the evidence, if any.
pub fn diagnose(e: &Evidence<'_>) -> Option<&'static Diagnosis> {
    let mut cut = e.text.len().min(MAX_TEXT);
    while !e.text.is_char_boundary(cut) {
        cut -= 1;
    }
    let text = e.text[..cut].to_ascii_lowercase();
    // The provider that wrote the text, when the recipient's domain does not say (a company
    // domain at Google or Microsoft before its MX is known).
    let from_text = provider::of_reply_text(&text);
    let status_in_text = |s: &str| text.contains(s);
    RULES
        .iter()
        .find(|rule| {
            let provider_ok = match rule.diagnosis.provider {
                Some(want) if rule.strict => [e.provider, from_text]
                    .into_iter()
                    .flatten()
                    .any(|p| same_provider(p, want)),
                _ => true,
            };
            let code_ok = rule.codes.is_empty() || e.code.is_some_and(|c| rule.codes.contains(&c));
            let status_ok = rule
                .status
                .is_none_or(|s| e.status == Some(s) || status_in_text(s));
            let all_ok = rule.all.iter().all(|w| text.contains(w));
            let any_ok = rule.any.is_empty()
                || rule.any.iter().any(|w| {
                    // `x.2.2` stands for the status code of either class.
                    match w.strip_prefix("x.") {
                        Some(detail) => {
                            e.status.is_some_and(|s| s.get(1..) == Some(&w[1..]))
                                || text.contains(&format!("5.{detail}"))
                                || text.contains(&format!("4.{detail}"))
                        }
                        None => text.contains(w),
                    }
                });
            provider_ok && code_ok && status_ok && all_ok && any_ok
        })
        .map(|rule| &rule.diagnosis)
}

/// Microsoft's consumer and business mail share their codes.
fn same_provider(seen: Provider, rule: Provider) -> bool {
    seen == rule
        || matches!(
            (seen, rule),
            (Provider::Microsoft365, Provider::Microsoft)
                | (Provider::Microsoft, Provider::Microsoft365)
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(
        provider: Option<Provider>,
        code: Option<u16>,
        status: Option<&str>,
        text: &str,
    ) -> Option<&'static str> {
        diagnose(&Evidence {
            provider,
            code,
            status,
            text,
        })
        .map(|d| d.key)
    }

    /// One real-world text per row: every row of the table is reached by its own evidence.
    #[test]
    fn every_row_is_recognised_from_its_text() {
        let g = Some(Provider::Google);
        type Row<'a> = (
            Option<Provider>,
            Option<u16>,
            Option<&'a str>,
            &'a str,
            &'a str,
        );
        let table: &[Row<'_>] = &[
            (
                Some(Provider::Microsoft),
                Some(550),
                Some("5.7.515"),
                "550 5.7.515 Access denied, sending domain example.com doesn't meet the required authentication level.",
                "microsoft-5.7.515",
            ),
            (
                None,
                Some(550),
                Some("5.7.1"),
                "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). [AM0EUR02FT001.eop-EUR02.prod.protection.outlook.com]",
                "microsoft-s3150",
            ),
            (
                Some(Provider::Microsoft365),
                Some(550),
                Some("5.7.606"),
                "550 5.7.606 Access denied, banned sending IP [192.0.2.1].",
                "microsoft-5.7.606",
            ),
            (
                Some(Provider::Microsoft),
                Some(451),
                Some("4.7.650"),
                "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.",
                "microsoft-4.7.650",
            ),
            (
                Some(Provider::Microsoft365),
                Some(550),
                Some("5.4.1"),
                "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
                "microsoft-5.4.1",
            ),
            (
                g,
                Some(550),
                Some("5.7.26"),
                "550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy. gsmtp",
                "gmail-5.7.26",
            ),
            (
                None,
                Some(421),
                Some("4.7.26"),
                "421-4.7.26 This mail has been rate limited because it is unauthenticated. - gsmtp",
                "gmail-4.7.26",
            ),
            (
                g,
                Some(550),
                Some("5.7.27"),
                "550-5.7.27 Your email has been blocked because the sender is unauthenticated. SPF did not pass",
                "gmail-5.7.27",
            ),
            (
                g,
                Some(550),
                Some("5.7.30"),
                "550-5.7.30 Your email has been blocked because DKIM authentication didn't pass",
                "gmail-5.7.30",
            ),
            (
                g,
                Some(550),
                Some("5.7.25"),
                "550-5.7.25 The IP address sending this message does not have a PTR record setup",
                "gmail-5.7.25",
            ),
            (
                None,
                Some(421),
                Some("4.7.28"),
                "421-4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited. gsmtp",
                "gmail-4.7.28",
            ),
            (
                g,
                Some(421),
                Some("4.7.0"),
                "421-4.7.0 This message is suspicious due to the very low reputation of the sending domain.",
                "gmail-4.7.0-reputation",
            ),
            (
                g,
                Some(421),
                Some("4.7.0"),
                "421 4.7.0 Try again later, closing connection. (EHLO)",
                "gmail-4.7.0",
            ),
            (
                g,
                Some(550),
                Some("5.7.1"),
                "550-5.7.1 Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
                "gmail-5.7.1-spam",
            ),
            (
                g,
                Some(550),
                Some("5.7.1"),
                "550-5.7.1 Messages missing a valid Message-ID header are not accepted.",
                "gmail-message-id",
            ),
            (
                g,
                Some(450),
                Some("4.2.1"),
                "450-4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.",
                "gmail-4.2.1",
            ),
            (
                Some(Provider::Yahoo),
                Some(421),
                Some("4.7.0"),
                "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1",
                "yahoo-tss04",
            ),
            (
                Some(Provider::Yahoo),
                Some(421),
                Some("4.7.0"),
                "421 4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints",
                "yahoo-ts01",
            ),
            (
                Some(Provider::Yahoo),
                Some(553),
                Some("5.7.2"),
                "553 5.7.2 [TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.",
                "yahoo-ts03",
            ),
            (
                Some(Provider::Yahoo),
                Some(554),
                Some("5.7.9"),
                "554 5.7.9 Message not accepted for policy reasons. See https://senders.yahooinc.com/error-codes",
                "yahoo-5.7.9",
            ),
            (
                Some(Provider::Yahoo),
                Some(554),
                None,
                "554 Message not allowed - [PH01] Email not accepted for policy reasons.",
                "yahoo-ph01",
            ),
            (
                Some(Provider::Yahoo),
                Some(553),
                Some("5.7.1"),
                "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in Spamhaus's list",
                "yahoo-bl21",
            ),
            (
                Some(Provider::Apple),
                Some(554),
                Some("5.7.1"),
                "554 5.7.1 [CS01] Message rejected due to local policy. Please visit https://support.apple.com/en-us/HT204137",
                "icloud-cs01",
            ),
            (
                None,
                Some(550),
                Some("5.7.0"),
                "550 5.7.0 Blocked - see https://support.apple.com/en-us/HT204137 [HM08] Message rejected due to local policy",
                "icloud-hm08",
            ),
            (
                Some(Provider::Comcast),
                Some(554),
                Some("5.7.1"),
                "554 5.7.1 192.0.2.1 found on one or more DNSBLs, see http://postmaster.comcast.net/smtp-error-codes.php#BL000010",
                "comcast-bl",
            ),
            (
                Some(Provider::Comcast),
                Some(421),
                None,
                "421 192.0.2.1 rate limited, see http://postmaster.comcast.net/smtp-error-codes.php#RL000001",
                "comcast-rl",
            ),
            (
                None,
                Some(554),
                Some("5.7.0"),
                "554 5.7.0 Reject, id=12345 - 192.0.2.1 - Proofpoint Dynamic Reputation blocked. See https://ipcheck.proofpoint.com",
                "proofpoint-reputation",
            ),
            (
                Some(Provider::Mimecast),
                Some(550),
                None,
                "550 Administrative prohibition - envelope blocked - https://community.mimecast.com/docs/DOC-1369#550",
                "mimecast-blocked",
            ),
            (
                None,
                Some(554),
                Some("5.7.1"),
                "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
                "spamhaus-listed",
            ),
            (
                None,
                Some(550),
                Some("5.7.1"),
                "550 5.7.1 Message rejected as spam by Content Filtering.",
                "spam-content",
            ),
            (
                None,
                Some(552),
                Some("5.2.2"),
                "552 5.2.2 <ann@example.org>: mailbox over quota",
                "mailbox-full",
            ),
            (
                None,
                Some(550),
                Some("5.1.1"),
                "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown",
                "user-unknown",
            ),
        ];
        let mut reached = std::collections::HashSet::new();
        for (provider, code, status, text, want) in table {
            assert_eq!(
                check(*provider, *code, *status, text),
                Some(*want),
                "{text}"
            );
            reached.insert(*want);
        }
        for rule in RULES {
            assert!(
                reached.contains(rule.diagnosis.key),
                "row {} is never tested",
                rule.diagnosis.key
            );
        }
    }

    #[test]
    fn provider_rows_need_their_provider_and_plain_replies_get_nothing() {
        // Gmail's rate-limit text at another provider is not Gmail's.
        assert_eq!(
            check(
                Some(Provider::Yahoo),
                Some(421),
                Some("4.7.0"),
                "421 4.7.0 Try again later"
            ),
            None
        );
        // The same reply from an unknown domain is recognised by Google's "gsmtp" marker.
        assert_eq!(
            check(
                None,
                Some(421),
                Some("4.7.0"),
                "421 4.7.0 Try again later - gsmtp"
            ),
            Some("gmail-4.7.0")
        );
        assert_eq!(check(None, Some(250), None, "250 2.0.0 Ok: queued"), None);
        assert_eq!(check(None, None, None, "connection refused"), None);
        assert_eq!(
            check(
                None,
                Some(451),
                Some("4.3.0"),
                "451 4.3.0 Temporary lookup failure"
            ),
            None
        );
    }

    #[test]
    fn keys_are_unique_and_every_row_says_what_to_do() {
        let mut keys = std::collections::HashSet::new();
        for d in all() {
            assert!(keys.insert(d.key), "duplicate {}", d.key);
            assert!(
                !d.meaning.is_empty() && !d.fix.is_empty() && !d.source.is_empty(),
                "{}",
                d.key
            );
            assert_eq!(by_key(d.key).map(|x| x.key), Some(d.key));
        }
        assert_eq!(by_key("nope"), None);
    }

    #[test]
    fn hostile_text_is_bounded_and_never_panics() {
        let long = format!("550 5.7.1 {}S3150", "é".repeat(10_000));
        // The marker lies beyond MAX_TEXT: not read.
        assert_eq!(check(None, Some(550), None, &long), None);
        assert_eq!(
            check(None, Some(550), Some("5.7.515"), "\u{0}\u{1b}[31m"),
            Some("microsoft-5.7.515")
        );
    }
}
