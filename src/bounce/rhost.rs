//! Remote-host rules: the large providers document their own refusal texts and error labels
//! (Cox `AUP#CXBL`, GoDaddy `IB212`, Orange `OFR_416`, Facebook `RCP-P2`, ...), which say more
//! than the generic keyword tables. This module knows which provider answered (from the
//! remote MTA, the recipient's domain or the reporting MTA) and what its words mean. It decides
//! nothing for other hosts and reads nothing but the evidence it is given.

use super::reason::{self, Reason, Stage};

/// A provider with documented refusal texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Aol,
    Apple,
    Cloudflare,
    Cox,
    Facebook,
    FrancePtt,
    GoDaddy,
    Google,
    GoogleWorkspace,
    Iua,
    Kddi,
    MessageLabs,
    Microsoft,
    Mimecast,
    NttDocomo,
    Outlook,
    Spectrum,
    Tencent,
    YahooInc,
}

/// Host names (or their tails) each provider's mail servers answer from, lowercase.
const HOSTS: &[(Provider, &[&str])] = &[
    (Provider::Aol, &[".mail.aol.com", ".mx.aol.com"]),
    (
        Provider::Apple,
        &[".mail.icloud.com", ".apple.com", ".me.com"],
    ),
    (Provider::Cloudflare, &[".mx.cloudflare.net"]),
    (Provider::Cox, &["cox.net"]),
    (Provider::Facebook, &[".facebook.com"]),
    (
        Provider::FrancePtt,
        &[".laposte.net", ".orange.fr", ".wanadoo.fr"],
    ),
    (
        Provider::GoDaddy,
        &["smtp.secureserver.net", "mailstore1.secureserver.net"],
    ),
    (
        Provider::Google,
        &["aspmx.l.google.com", "gmail-smtp-in.l.google.com"],
    ),
    (Provider::GoogleWorkspace, &["googlemail.com"]),
    (Provider::Iua, &[".email.ua"]),
    (Provider::Kddi, &[".ezweb.ne.jp", "msmx.au.com"]),
    (Provider::MessageLabs, &[".messagelabs.com"]),
    (
        Provider::Microsoft,
        &[
            ".prod.outlook.com",
            ".protection.outlook.com",
            ".onmicrosoft.com",
            ".exchangelabs.com",
        ],
    ),
    (Provider::Mimecast, &[".mimecast.com"]),
    (Provider::NttDocomo, &["mfsmax.docomo.ne.jp"]),
    (Provider::Outlook, &[".hotmail.com"]),
    (Provider::Spectrum, &["charter.net"]),
    (Provider::Tencent, &[".qq.com"]),
    (Provider::YahooInc, &[".yahoodns.net"]),
];

/// `host` is `tail` or ends with it on a label boundary.
fn host_matches(host: &str, tail: &str) -> bool {
    let tail_bare = tail.trim_start_matches('.');
    host == tail_bare
        || host
            .strip_suffix(tail_bare)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// The provider whose servers include `domain` (a recipient's domain part): the domain is a
/// tail of one of the provider's host names (`aol.com` for `.mx.aol.com`).
fn provider_of_domain(domain: &str) -> Option<Provider> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if !domain.contains('.') {
        return None;
    }
    HOSTS
        .iter()
        .find(|(_, tails)| {
            tails
                .iter()
                .any(|t| host_matches(t.trim_start_matches('.'), &domain))
        })
        .map(|(p, _)| *p)
}

fn provider_of_host(host: &str) -> Option<Provider> {
    let host = host
        .trim()
        .split([' ', '[', ';'])
        .next()
        .unwrap_or("")
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    HOSTS
        .iter()
        .find(|(_, tails)| tails.iter().any(|t| host_matches(&host, t)))
        .map(|(p, _)| *p)
}

/// Which provider's rules apply: the recipient's domain first, then the remote MTA, then the
/// MTA that wrote the bounce (sisimai's order, so numbers compare).
pub fn provider(
    recipient: Option<&str>,
    remote_host: Option<&str>,
    reporting_host: Option<&str>,
) -> Option<Provider> {
    recipient
        .and_then(|r| r.rsplit_once('@'))
        .and_then(|(_, d)| provider_of_domain(d))
        .or_else(|| remote_host.and_then(provider_of_host))
        .or_else(|| reporting_host.and_then(provider_of_host))
}

/// The remote server named in a transcript line: Postfix `host mx.example.org[192.0.2.1]`,
/// Exim `host mx.example.org [192.0.2.1]`, Sendmail `while talking to mx.example.org.:`.
pub fn remote_host_in(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    for marker in ["host ", "host: ", "talking to "] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(marker) {
            let start = from + i + marker.len();
            from = start;
            let name: String = lower[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                .collect();
            let name = name.trim_end_matches('.');
            let rest = &lower[start + name.len()..];
            let rest = rest.strip_prefix('.').unwrap_or(rest);
            let shaped = name.contains('.') && name.chars().any(|c| c.is_ascii_alphabetic());
            let followed = ['[', ':', ' '].iter().any(|c| rest.starts_with(*c))
                && (rest.starts_with('[')
                    || rest.starts_with(" [")
                    || rest.starts_with(" (")
                    || rest.starts_with(':'));
            if shaped && followed {
                return Some(name.to_owned());
            }
        }
    }
    None
}

/// Phrase tables per provider, lowercase, first match wins.
type Phrases = &'static [(Reason, &'static [&'static str])];

const AOL: Phrases = &[
    (Reason::HostUnknown, &["host or domain name not found"]),
    (
        Reason::NotAccept,
        &["type=mx: malformed or unexpected name server reply"],
    ),
];

const APPLE: Phrases = &[
    (
        Reason::AuthFailure,
        &["s dmarc policy", "for failing both spf and dkim"],
    ),
    (
        Reason::Blocked,
        &[
            "having a domain present in the spamhaus",
            "due to listing in spamhaus",
            "proofpoint.com/dnsbl-lookup",
            "not accepting connections",
        ],
    ),
    (Reason::HasMoved, &["recipient no longer on server"]),
    (Reason::MailboxFull, &["user is over quota"]),
    (Reason::NoRelaying, &["relay access denied"]),
    (Reason::NotAccept, &["host/domain does not accept mail"]),
    (Reason::PolicyViolation, &["due to local policy"]),
    (Reason::Rejected, &["sender address rejected"]),
    (Reason::Speeding, &["due to excessive volume"]),
    (
        Reason::UserUnknown,
        &[
            "inactive email address",
            "user does not exist",
            "unknown or illegal alias",
        ],
    ),
];

const CLOUDFLARE: Phrases = &[
    (Reason::Blocked, &["found on one or more dnsbls"]),
    (Reason::SystemError, &["upstream error"]),
];

const COX: Phrases = &[
    (
        Reason::Blocked,
        &["too many bad commands from", "too many invalid recipients"],
    ),
    (
        Reason::RequirePtr,
        &["dns check failure - try again later", "rejected - no rdns"],
    ),
    (
        Reason::PolicyViolation,
        &[
            "esmtp no data before greeting",
            "attachment extension is forbidden",
        ],
    ),
    (Reason::Rejected, &["sender rejected"]),
    (
        Reason::SystemError,
        &["esmtp server temporarily not available"],
    ),
    (
        Reason::TooManyConn,
        &[
            "too many sessions from",
            "requested action aborted: try again later",
            "message threshold exceeded",
        ],
    ),
    (Reason::UserUnknown, &["recipient rejected"]),
];

const GODADDY: Phrases = &[
    (
        Reason::Blocked,
        &["rbl reject", "www.spamhaus.org/query/bl?ip="],
    ),
    (
        Reason::Expired,
        &["has been in the queue too long", "delivery timeout"],
    ),
    (Reason::MailboxFull, &["account storage limit"]),
    (
        Reason::SpamDetected,
        &["message rejected for spam or virus content"],
    ),
    (Reason::Suspend, &["account disabled"]),
    (Reason::SystemError, &["message is looping"]),
    (
        Reason::UserUnknown,
        &["recipient not found", "account does not exist"],
    ),
];

const GOOGLE: Phrases = &[
    (
        Reason::AuthFailure,
        &[
            "the spf record of the sending domain",
            "senders to authenticate with either spf or dkim",
            "fails to pass spf checks for an spf record with a hard fail",
            "has an spf record with a hard fail policy",
            "is not accepted due to domain's dmarc policy",
            "fails to pass authentication checks",
            "senders to authenticate with spf",
            "senders to authenticate their email with spf",
            "senders to authenticate their email with dkim",
            "senders to authenticate with dkim",
            "aligned with either the authenticated spf or dkim",
            "to add a dmarc record to",
        ],
    ),
    (
        Reason::BadReputation,
        &[
            "very low reputation of the sending ip address",
            "very low reputation of the sending domain",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "ip not in whitelist for rcpt domain",
            "try again later, closing connection.",
            "empty helo/ehlo argument not allowed",
            "helo/ehlo argument is invalid",
            "an unusual rate of unsolicited mail",
            "an unusual rate of mail",
        ],
    ),
    (
        Reason::ExceedLimit,
        &[
            "exceeds google's limit of limit attachments",
            "exceeded google's message header size limits",
            "bytes per individual header size",
            "exceeds google's header name limit of",
            "exceeds google's message header size limit",
        ],
    ),
    (
        Reason::Expired,
        &["connection expired", "timeout - closing connection"],
    ),
    (
        Reason::SecurityError,
        &[
            "must issue a starttls command first",
            "starttls may not be repeated",
            "tls required for rcpt domain",
            "senders to use tls/ssl for smtp",
            "too many login attempts",
            "no identity changes permitted",
            "authentication required.",
            "application-specific password required",
            "please log in with your web browser",
            "please log in through your web browser",
            "username and password not accepted",
        ],
    ),
    (
        Reason::MailboxFull,
        &[
            "inbox is out of storage space",
            "is over quota",
            "email quota exceeded",
        ],
    ),
    (
        Reason::MesgTooBig,
        &[
            "exceeded google's message size limits",
            "exceeds google's message size limit of",
        ],
    ),
    (Reason::NetworkError, &["message exceeded 50 hops"]),
    (
        Reason::NoRelaying,
        &[
            "mail relay denied",
            "invalid credentials for relay",
            "is not authorized to send email directly to our servers",
        ],
    ),
    (
        Reason::NotCompliantRfc,
        &[
            "missing a valid address in the from: header",
            "multiple addresses in from: header are not accepted",
            "is not rfc 5322 compliant",
            "missing a valid message-id: header",
            "contains a unicode character in a disallowed header",
            "encoded-word syntax is not permitted",
            "is not a valid rfc 5321 address",
            "mail message is malformed",
        ],
    ),
    (
        Reason::PolicyViolation,
        &[
            "illegal attachment on your message",
            "blocked because its content presents a potential security issue",
            "has a policy that prohibited",
            "sending messages with the same message-id:",
        ],
    ),
    (
        Reason::Rejected,
        &[
            "mail sending denied",
            "unauthenticated email is not accepted",
        ],
    ),
    (
        Reason::RequirePtr,
        &[
            "does not have a ptr record",
            "have a ptr record, or the ptr record",
            "ipv6 sending guidelines regarding ptr records",
            "does not match the ip address of the hostname",
        ],
    ),
    (
        Reason::SpamDetected,
        &[
            "due to the nature of the content or the links within",
            "likely unsolicited mail",
        ],
    ),
    (
        Reason::Speeding,
        &[
            "is receiving mail too quickly",
            "peak smtp relay limit exceeded for customer",
            "rate that prevents additional messages from being delivered",
            "daily sending quota exceeded",
            "daily user sending limit exceeded",
            "daily smtp relay limit exceeded for",
            "daily smtp relay sending limit exceeded for",
            "this mail has been rate limited",
        ],
    ),
    (
        Reason::Suspend,
        &[
            "account that you tried to reach is disabled",
            "account that you tried to reach is inactive",
        ],
    ),
    (
        Reason::SyntaxError,
        &[
            "smtp protocol violation",
            "optional argument not permitted",
            "too many unrecognized commands",
            "unimplemented command",
            "unrecognized command",
            "bad sequence of commands",
            "ehlo/helo first",
            "no data after bdat",
            "unrecognized authentication type",
            "too many unauthenticated commands",
        ],
    ),
    (
        Reason::SystemError,
        &[
            "temporary system problem",
            "server busy",
            "multiple destination domains per transaction is unsupported",
            "mail server has temporarily rejected this message",
            "mail server temporarily rejected message",
            "domain policy size per transaction exceeded",
        ],
    ),
    (
        Reason::TooManyConn,
        &[
            "your message has too many recipients",
            "too many recipients for this sender",
        ],
    ),
    (
        Reason::UserUnknown,
        &[
            "the email account that you tried to reach does not exist",
            "address couldn't be found",
        ],
    ),
    (
        Reason::HostUnknown,
        &["we weren't able to find the recipient domain"],
    ),
];

const GOOGLE_WORKSPACE: Phrases = &[
    (Reason::NotAccept, &["null mx"]),
    (
        Reason::UserUnknown,
        &["because the address couldn't be found. check for typos"],
    ),
];

const KDDI: Phrases = &[
    (Reason::Filtered, &["550 : user unknown"]),
    (Reason::UserUnknown, &[">: user unknown"]),
];

const MESSAGELABS: Phrases = &[
    (Reason::AuthFailure, &["domain authentication fail"]),
    (Reason::BadReputation, &["connection rejected by policy"]),
    (
        Reason::Rejected,
        &[
            "sender envelope domain not allowed for sender ip address",
            "your domain has been blocked",
            "your email address has been blocked",
            "your envelope sender is in my badmailfrom list",
            "your email address has been blacklisted",
            "your domain has been blacklisted",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "mail rejected because your ip is in the pbl",
            "your ip address has been",
        ],
    ),
    (Reason::ContentError, &["stray linefeeds in message"]),
    (Reason::SecurityError, &["tls/sslv3 connection required"]),
    (Reason::NoRelaying, &[" as a relay, "]),
    (
        Reason::NotCompliantRfc,
        &[
            "550 requested action aborted [4]",
            "has detected that this message is not rfc 5322",
        ],
    ),
    (
        Reason::SecurityError,
        &["please turn on smtp authentication in your mail client"],
    ),
    (
        Reason::SpamDetected,
        &["message filtered", "filtered by outbound scanning"],
    ),
    (
        Reason::TooManyConn,
        &[
            "too many recipients received this hour",
            "too many messages",
        ],
    ),
    (
        Reason::UserUnknown,
        &[
            "no such user",
            "invalid recipient",
            "mailbox is not allowed",
        ],
    ),
];

const MICROSOFT: Phrases = &[
    (
        Reason::SecurityError,
        &[
            "client was not authenticated to send anonymous mail",
            "cannot achieve exchange server authentication",
        ],
    ),
    (Reason::SystemError, &["(suspiciousremoteservererror)"]),
    (
        Reason::AuthFailure,
        &[
            "must pass either spf or dkim validation",
            "rejected because of sender policy framework violation",
            "does not pass dmarc verification",
            "doesn't meet the required authentication level",
        ],
    ),
    (
        Reason::BadReputation,
        &["temporarily rate limited due to ip reputation"],
    ),
    (
        Reason::Blocked,
        &[
            "connection dropped",
            "access denied, please try again later",
            "access denied, bad helo",
            "access denied, rejected by recipient",
            "does not accept email over ipv6",
            "access denied, banned sender",
            "using customer block list",
            "access denied, banned sending ip",
            "is on our block list",
        ],
    ),
    (Reason::RequirePtr, &["must have a reverse dns record"]),
    (
        Reason::ContentError,
        &[
            "too many related errors",
            "invalid characters",
            "agent generated message depth exceeded",
            "invalid message content",
        ],
    ),
    (
        Reason::ExceedLimit,
        &["message too large for this recipient"],
    ),
    (
        Reason::MesgTooBig,
        &[
            "message size exceeds fixed maximum message size",
            "message too big for system",
        ],
    ),
    (
        Reason::SecurityError,
        &[
            "failed mta-sts validation",
            "starttls is required to send mail",
            "starttls-not-supported:",
            "certificate-expired:",
            "tlsa-invalid:",
            "dnssec-invalid:",
            "certificate-host-mismatch:",
        ],
    ),
    (Reason::MailboxFull, &["mailbox full"]),
    (
        Reason::NetworkError,
        &[
            "hop count exceeded - possible mail loop",
            "dns query failed",
            "routing loop detected",
        ],
    ),
    (
        Reason::Expired,
        &["message delayed", "message expired", "connection timed out"],
    ),
    (
        Reason::NoRelaying,
        &[
            "unable to relay",
            "client was not authenticated",
            "relay access denied",
        ],
    ),
    (
        Reason::NotAccept,
        &[
            "system not accepting network messages",
            "hosted tenant which has no mail-enabled subscriptions",
            "missing or bad storedriver mdb properties",
        ],
    ),
    (
        Reason::PolicyViolation,
        &[
            "x-dg-ref header is too long",
            "policy violation detected (as345)",
            "delivery not authorized, message refused",
        ],
    ),
    (
        Reason::Rejected,
        &[
            "unknown sender address",
            "sender denied",
            "access denied, bad outbound sender",
            "delivery not authorized",
            "sender was not authenticated",
            "sender not in allowed-senders list",
            "sender not authenticated for group",
            "access denied, spam abuse detected",
            "must be rfc 5322 section 3.6.2 compliant",
        ],
    ),
    (
        Reason::SpamDetected,
        &["content filter agent quarantined this message"],
    ),
    (
        Reason::Suspend,
        &[
            "access denied, banned recipient",
            "mailbox cannot be accessed",
        ],
    ),
    (Reason::SyntaxError, &["send hello first"]),
    (
        Reason::SystemError,
        &[
            "service not available",
            "service not active",
            "system incorrectly configured",
            "when journaling archive is disabled",
            "helo / ehlo requires domain address",
            "destination mailbox address ambiguous",
            "mailing list expansion problem",
            "misconfigured forwarding address",
            "message failed to be replicated",
            "temporary server error. please try again later",
            "server busy. please try again later from",
            "pfa agent busy",
        ],
    ),
    (Reason::SystemFull, &["insufficient system resources"]),
    (
        Reason::UserUnknown,
        &[
            "resolver.adr.exrecipnotfound",
            "user unknown",
            "invalid recipient address",
            "recipient address reserved by rfc 2606",
            "single label domains not accepted",
        ],
    ),
];

const MIMECAST: Phrases = &[
    (
        Reason::AuthFailure,
        &[
            "spf sender invalid - envelope rejected",
            "dkim sender invalid - envelope rejected",
            "dmarc sender invalid - envelope rejected",
        ],
    ),
    (
        Reason::BadReputation,
        &[
            "internal resources are temporarily unavailable",
            "local ct ip reputation - (reject)",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "sender address blocked",
            "recipient temporarily unavailable",
            "ip temporarily blacklisted",
        ],
    ),
    (
        Reason::SecurityError,
        &[
            "this route requires encryption (tls)",
            "this route requires tls version 1.2 or greater",
            "this route requires high-strength ciphers",
            "configuration is invalid for this certificate",
            "incorrect authentication data",
            "submitter failed to authenticate",
        ],
    ),
    (Reason::MesgTooBig, &["maximum email size exceeded"]),
    (
        Reason::NetworkError,
        &[
            "the incorrect hostname used for inbounds",
            "mail loop detected",
        ],
    ),
    (
        Reason::NoRelaying,
        &["open relay not allowed", "open relay is not allowed"],
    ),
    (Reason::NotAccept, &["account inbounds disabled"]),
    (
        Reason::PolicyViolation,
        &[
            "anti-spoofing policy",
            "content examination policy",
            "host network not allowed",
            "host network, not allowed",
        ],
    ),
    (
        Reason::Rejected,
        &[
            "administrative prohibition envelope blocked",
            "envelope blocked - user entry",
            "envelope blocked - user domain entry",
            "manually blocked senders",
            "blocked senders - block policy",
            "block policy for envelope from address",
        ],
    ),
    (
        Reason::SystemError,
        &[
            "unable to process connection at this time",
            "message ended early",
            "unable to process command",
            "unable to process an email at this time",
        ],
    ),
    (
        Reason::TooManyConn,
        &[
            "account service is temporarily unavailable",
            "too many recipients",
            "exceeding outbound thread limit",
        ],
    ),
    (
        Reason::UserUnknown,
        &["invalid address", "user unknown", "invalid recipient"],
    ),
];

const OUTLOOK: Phrases = &[
    (
        Reason::HostUnknown,
        &["could not be delivered to the recipient because the domain is not reachable"],
    ),
    (
        Reason::UserUnknown,
        &["requested action not taken: mailbox unavailable"],
    ),
];

const TENCENT: Phrases = &[
    (
        Reason::AuthFailure,
        &["spf check failed", "dmarc check failed"],
    ),
    (
        Reason::Blocked,
        &[
            "suspected bounce attacks",
            "suspected spam ip",
            "connection denied",
        ],
    ),
    (Reason::MesgTooBig, &["message too large"]),
    (
        Reason::Rejected,
        &["suspected spam", "mail is rejected by recipients"],
    ),
    (
        Reason::SpamDetected,
        &["spam is embedded in the email", "mail content denied"],
    ),
    (
        Reason::Speeding,
        &[
            "mailbox unavailable or access denined",
            "frequency of receiving messages is limited",
        ],
    ),
    (Reason::Suspend, &["is a deactivated mailbox"]),
    (Reason::SyntaxError, &["bad address syntax"]),
    (
        Reason::TooManyConn,
        &[
            "ip frequency limited",
            "domain frequency limited",
            "sender frequency limited",
            "connection frequency limited",
        ],
    ),
    (Reason::UserUnknown, &["mailbox not found"]),
];

const YAHOO: Phrases = &[
    (
        Reason::AuthFailure,
        &["yahoo requires all senders to authenticate with either spf or dkim"],
    ),
    (
        Reason::Blocked,
        &[
            " because the ip is in spamhaus's list;",
            "not accepted from ip addresses on spamhaus xbl",
        ],
    ),
    (Reason::NoRelaying, &["relaying denied for "]),
    (Reason::NotCompliantRfc, &["headers are not rfc compliant"]),
    (
        Reason::PolicyViolation,
        &["not accepted for policy reasons"],
    ),
    (
        Reason::Rejected,
        &[
            "temporarily deferred due to unexpected volume or user complaints",
            "due to unresolvable rfc.5321 domain",
            " will be permanently deferred",
        ],
    ),
    (Reason::Speeding, &["user is receiving mail too quickly"]),
    (
        Reason::Suspend,
        &[" is no longer valid.", "this mailbox is disabled"],
    ),
    (
        Reason::SyntaxError,
        &["syntax error in parameters or arguments"],
    ),
    (Reason::TooManyConn, &["max message per connection reached"]),
    (
        Reason::UserUnknown,
        &["dd this user doesn't have a ", "mailbox not found"],
    ),
];

const NTTDOCOMO: Phrases = &[
    (Reason::MailboxFull, &["552 too much mail data"]),
    (
        Reason::SyntaxError,
        &[
            "503 bad sequence of commands",
            "504 command parameter not implemented",
        ],
    ),
    (Reason::TooManyConn, &["552 too many recipients"]),
    (Reason::UserUnknown, &["550 unknown user"]),
];

fn phrases(table: Phrases, lower: &str) -> Option<Reason> {
    table
        .iter()
        .find(|(_, ps)| ps.iter().any(|p| lower.contains(p)))
        .map(|(r, _)| *r)
}

/// Every alphanumeric token right after an occurrence of `marker` in `lower`.
fn tokens_after<'t>(lower: &'t str, marker: &'t str) -> impl Iterator<Item = &'t str> + 't {
    lower.match_indices(marker).filter_map(move |(i, _)| {
        let rest = &lower[i + marker.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        Some(&rest[..end]).filter(|t| !t.is_empty())
    })
}

/// The first such token.
fn token_after<'t>(lower: &'t str, marker: &'t str) -> Option<&'t str> {
    tokens_after(lower, marker).next()
}

/// Cox's `AUP#<label>` codes.
fn cox_code(lower: &str) -> Option<Reason> {
    tokens_after(lower, "aup#").find_map(cox_label)
}

fn cox_label(label: &str) -> Option<Reason> {
    Some(match label {
        "cxbl" | "cdrbl" => Reason::Blocked,
        "cxdns" => Reason::RequirePtr,
        "cxsndr" => Reason::AuthFailure,
        "cxsmtp" => Reason::Rejected,
        "cxcnct" | "cxmxrt" => Reason::TooManyConn,
        "cxthrt" | "cxmj" => Reason::SecurityError,
        l if l.starts_with("ipbl") => Reason::Blocked,
        l if l.starts_with("urlbl") => Reason::SpamDetected,
        _ => return None,
    })
}

/// Spectrum (Charter): `AUP#I1000` / `AUP#O1350`, four-digit codes in documented ranges.
fn spectrum_code(lower: &str) -> Option<Reason> {
    // `AUP#I1000`, `AUP#O-1350`: the first run of four digits after the label.
    let start = lower.find("aup#")? + "aup#".len();
    let label: String = lower[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let digits = label
        .split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() >= 4)?;
    let code: u16 = digits.get(..4)?.parse().ok()?;
    Some(match code {
        1000 | 1200..=1250 => Reason::Blocked,
        1010..=1080 | 1500 | 1520 => Reason::Rejected,
        1090 => Reason::SystemError,
        1100..=1150 => Reason::RequirePtr,
        1160..=1190 | 1560 => Reason::PolicyViolation,
        1260 => Reason::NetworkError,
        1300..=1340 => Reason::TooManyConn,
        1350..=1490 | 1540 | 1550 | 1580 => Reason::Speeding,
        1530 => Reason::MesgTooBig,
        _ => return None,
    })
}

/// GoDaddy's ` IBnnn` labels.
fn godaddy_code(lower: &str) -> Option<Reason> {
    tokens_after(lower, " ib").find_map(godaddy_label)
}

fn godaddy_label(label: &str) -> Option<Reason> {
    Some(match label {
        "401" => Reason::SecurityError,
        "501" | "502" => Reason::NotCompliantRfc,
        "506" => Reason::Rejected,
        "508" => Reason::AuthFailure,
        "108" => Reason::RequirePtr,
        "212" => Reason::SpamDetected,
        "705" => Reason::VirusDetected,
        "605" | "007" => Reason::TooManyConn,
        "101" | "504" | "510" | "607" => Reason::Speeding,
        "110" | "111" | "112" | "113" | "104" | "105" | "106" => Reason::Blocked,
        "103" => Reason::BadReputation,
        _ => return None,
    })
}

/// Orange / La Poste: `LPN007_510`, `OFR_416`, `OFR004_405`: the last three digits name it.
fn franceptt_code(lower: &str) -> Option<Reason> {
    let label = ["lpnaaa", "lpn", "ofr", "ouk"]
        .iter()
        .find_map(|m| lower.rfind(m).map(|i| &lower[i + m.len()..]))?;
    let token: String = label
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let digits: Vec<char> = token.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 3 {
        return None;
    }
    let code: String = digits[digits.len() - 3..].iter().collect();
    Some(match code.as_str() {
        "101" | "102" | "103" | "510" | "999" => Reason::Blocked,
        "104" => Reason::TooManyConn,
        "305" | "402" => Reason::SecurityError,
        "401" | "517" => Reason::AuthFailure,
        "403" | "405" | "415" | "421" => Reason::Rejected,
        "416" => Reason::UserUnknown,
        "417" => Reason::MailboxFull,
        "420" | "426" => Reason::Suspend,
        "505" => Reason::SystemError,
        "506" => Reason::SpamDetected,
        "514" => Reason::MesgTooBig,
        "630" => Reason::PolicyViolation,
        _ => return None,
    })
}

/// i.ua: a link `mail.i.ua/err/N/` names the refusal.
fn iua_code(lower: &str) -> Option<Reason> {
    let n = token_after(lower, ".i.ua/err/")?;
    Some(match n {
        "1" | "6" => Reason::NoRelaying,
        "2" => Reason::UserUnknown,
        "3" => Reason::Suspend,
        "4" => Reason::MailboxFull,
        "5" => Reason::TooManyConn,
        "7" | "9" => Reason::Blocked,
        "8" => Reason::Rejected,
        "10" => Reason::Filtered,
        _ => return None,
    })
}

/// Facebook's `XXX-PN` / `XXX-TN` response labels.
fn facebook_code(lower: &str) -> Option<Reason> {
    let dash = lower.find('-')?;
    let label = lower.get(dash.checked_sub(3)?..dash + 3)?;
    Some(match label {
        "pol-p7" => Reason::AuthFailure,
        "pol-p1" | "pol-p2" | "pol-p3" | "pol-p4" | "pol-t1" | "pol-t2" | "pol-t3" => {
            Reason::Blocked
        }
        "msg-p2" => Reason::ContentError,
        "rcp-p2" | "rcp-p3" => Reason::Filtered,
        "msg-p1" | "int-p2" => Reason::MesgTooBig,
        "msg-p3" => Reason::NotCompliantRfc,
        "dns-p1" | "dns-p2" | "dns-t1" => Reason::Rejected,
        "dns-p3" | "dns-t2" => Reason::RequirePtr,
        "pol-p6" => Reason::SpamDetected,
        "rcp-t4" => Reason::Suspend,
        "rcp-t1" => Reason::SystemError,
        "con-t1" | "con-t2" | "con-t3" | "con-t4" | "msg-t1" => Reason::TooManyConn,
        "rcp-p1" | "int-p1" | "int-p3" | "int-p4" => Reason::UserUnknown,
        "pol-p5" => Reason::VirusDetected,
        _ => return None,
    })
}

/// NTT DOCOMO rejects with the same "550 Unknown user" for a missing user and for the
/// recipient's own reception filter; the status and the stage tell them apart.
fn nttdocomo(status: Option<&str>, lower: &str, context: &str) -> Option<Reason> {
    match status {
        Some("5.1.1") => return Some(Reason::UserUnknown),
        Some("5.2.0") => return Some(Reason::Filtered),
        _ => {}
    }
    if let Some(r) =
        phrases(NTTDOCOMO, lower).filter(|r| *r != Reason::UserUnknown || status != Some("5.0.0"))
    {
        return Some(r);
    }
    if status == Some("5.0.0") {
        let context = context.to_lowercase();
        return match reason::stage(lower).or_else(|| reason::stage(&context)) {
            Some(Stage::Rcpt) => Some(Reason::UserUnknown),
            Some(Stage::Data) => Some(Reason::Rejected),
            _ => phrases(NTTDOCOMO, lower),
        };
    }
    None
}

/// Google Workspace reports DNS trouble for the recipient's domain in one wording whatever
/// the class: permanent means the host is unknown, temporary a network failure.
fn workspace(status: Option<&str>, reply: Option<u16>, lower: &str) -> Option<Reason> {
    let dns = ["responded with code nxdomain", "domain name not found"];
    if dns.iter().any(|p| lower.contains(p)) {
        let permanent =
            status.is_some_and(|s| s.starts_with('5')) || reply.is_some_and(|c| c >= 500);
        return Some(if permanent {
            Reason::HostUnknown
        } else {
            Reason::NetworkError
        });
    }
    if lower.contains(" had no relevant answers.") {
        return Some(Reason::NetworkError);
    }
    phrases(GOOGLE_WORKSPACE, lower)
}

/// The provider's own classification of `diagnostic`, if it has one.
pub fn classify(
    provider: Provider,
    status: Option<&str>,
    reply_code: Option<u16>,
    diagnostic: &str,
    context: &str,
) -> Option<Reason> {
    if diagnostic.trim().is_empty() {
        return None;
    }
    let lower = diagnostic.to_lowercase();
    match provider {
        Provider::Aol => phrases(AOL, &lower),
        Provider::Apple => phrases(APPLE, &lower),
        Provider::Cloudflare => phrases(CLOUDFLARE, &lower),
        Provider::Cox => cox_code(&lower).or_else(|| phrases(COX, &lower)),
        Provider::Facebook => facebook_code(&lower),
        Provider::FrancePtt => franceptt_code(&lower).or_else(|| {
            lower
                .contains("spf/dns de votre nom de domaine")
                .then_some(Reason::AuthFailure)
        }),
        Provider::GoDaddy => godaddy_code(&lower).or_else(|| phrases(GODADDY, &lower)),
        // The same words name a bad recipient (5.1.3) or a bad sender (5.1.7).
        Provider::Google
            if status == Some("5.1.3") && lower.contains("is not a valid rfc 5321 address") =>
        {
            Some(Reason::UserUnknown)
        }
        Provider::Google => phrases(GOOGLE, &lower),
        Provider::GoogleWorkspace => workspace(status, reply_code, &lower),
        Provider::Iua => iua_code(&lower),
        Provider::Kddi => phrases(KDDI, &lower),
        // Symantec Email Security.cloud refuses an unknown recipient with its own reply code,
        // "542 <address> Rejected".
        Provider::MessageLabs if reply_code == Some(542) && lower.contains(" rejected") => {
            Some(Reason::UserUnknown)
        }
        Provider::MessageLabs => phrases(MESSAGELABS, &lower),
        Provider::Microsoft => phrases(MICROSOFT, &lower),
        Provider::Mimecast => phrases(MIMECAST, &lower),
        Provider::NttDocomo => nttdocomo(status, &lower, context),
        Provider::Outlook => phrases(OUTLOOK, &lower),
        Provider::Spectrum => spectrum_code(&lower),
        Provider::Tencent => phrases(TENCENT, &lower),
        Provider::YahooInc => phrases(YAHOO, &lower),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_found_by_recipient_domain_remote_host_or_reporting_host() {
        assert_eq!(provider(Some("a@aol.com"), None, None), Some(Provider::Aol));
        assert_eq!(
            provider(
                Some("a@example.org"),
                Some("example-org.mail.protection.outlook.com [192.0.2.1]"),
                None
            ),
            Some(Provider::Microsoft)
        );
        assert_eq!(
            provider(Some("a@example.org"), None, Some("omr-a1.mx.aol.com")),
            Some(Provider::Aol)
        );
        // A label boundary is required: "notcox.net" is not Cox.
        assert_eq!(provider(Some("a@notcox.net"), None, None), None);
        assert_eq!(
            provider(Some("a@example.org"), Some("mx.example.org"), None),
            None
        );
    }

    #[test]
    fn each_provider_is_known_by_its_hosts_and_its_own_domain() {
        let cases = [
            ("mx2.mail.aol.com", "aol.com", Provider::Aol),
            ("mx2.mail.icloud.com", "me.com", Provider::Apple),
            (
                "relay1.mx.cloudflare.net",
                "cloudflare.net",
                Provider::Cloudflare,
            ),
            ("mx.cox.net", "cox.net", Provider::Cox),
            ("mx.laposte.net", "wanadoo.fr", Provider::FrancePtt),
            (
                "smtp.secureserver.net",
                "secureserver.net",
                Provider::GoDaddy,
            ),
            ("aspmx.l.google.com", "google.com", Provider::Google),
            (
                "mx.l.googlemail.com",
                "googlemail.com",
                Provider::GoogleWorkspace,
            ),
            ("mx.email.ua", "email.ua", Provider::Iua),
            ("lsean.ezweb.ne.jp", "au.com", Provider::Kddi),
            (
                "mx1.messagelabs.com",
                "messagelabs.com",
                Provider::MessageLabs,
            ),
            (
                "mx1.protection.outlook.com",
                "onmicrosoft.com",
                Provider::Microsoft,
            ),
            ("mx.mimecast.com", "mimecast.com", Provider::Mimecast),
            ("mfsmax.docomo.ne.jp", "docomo.ne.jp", Provider::NttDocomo),
            ("mx.hotmail.com", "hotmail.com", Provider::Outlook),
            ("mx.charter.net", "charter.net", Provider::Spectrum),
            ("mx.qq.com", "qq.com", Provider::Tencent),
            ("mx.yahoodns.net", "yahoodns.net", Provider::YahooInc),
        ];
        for (host, domain, want) in cases {
            assert_eq!(provider(None, Some(host), None), Some(want), "{host}");
            assert_eq!(
                provider(None, None, Some(host)),
                Some(want),
                "{host} as reporter"
            );
            let rcpt = format!("a@{domain}");
            assert_eq!(provider(Some(&rcpt), None, None), Some(want), "{domain}");
        }
    }

    #[test]
    fn remote_host_is_read_from_transcripts() {
        assert_eq!(
            remote_host_in("host mx1.example.org[192.0.2.1] said: 550 no"),
            Some("mx1.example.org".into())
        );
        assert_eq!(
            remote_host_in("... while talking to mfsmax.docomo.ne.jp.:\n>>> DATA"),
            Some("mfsmax.docomo.ne.jp".into())
        );
        assert_eq!(remote_host_in("the host said nothing"), None);
    }

    #[test]
    fn provider_labels_decide() {
        let c = |p, d| classify(p, None, None, d, "");
        assert_eq!(
            c(Provider::Cox, "554 AUP#CXBL blocked"),
            Some(Reason::Blocked)
        );
        assert_eq!(
            c(Provider::Spectrum, "550 5.1.0 AUP#I1330 too many"),
            Some(Reason::TooManyConn)
        );
        assert_eq!(
            c(Provider::Spectrum, "554 5.7.1 AUP#O-1160 policy"),
            Some(Reason::PolicyViolation)
        );
        assert_eq!(
            c(Provider::GoDaddy, "552 message rejected IB212"),
            Some(Reason::SpamDetected)
        );
        assert_eq!(
            c(
                Provider::GoDaddy,
                "554 ibm relay says: this ip is listed IB104"
            ),
            Some(Reason::Blocked)
        );
        assert_eq!(
            c(Provider::FrancePtt, "Invalid recipient. OFR_416 [416]"),
            Some(Reason::UserUnknown)
        );
        assert_eq!(
            c(
                Provider::Facebook,
                "550 5.1.1 RCP-P2 http://postmaster.facebook.com"
            ),
            Some(Reason::Filtered)
        );
        assert_eq!(
            c(Provider::Iua, "see https://mail.i.ua/err/4/"),
            Some(Reason::MailboxFull)
        );
        assert_eq!(c(Provider::Cox, "550 no idea"), None);
    }

    #[test]
    fn docomo_tells_filter_from_unknown_user_by_stage() {
        let at = |d| classify(Provider::NttDocomo, Some("5.0.0"), Some(550), d, "");
        assert_eq!(
            at(">>> RCPT TO:<a@docomo.ne.jp> <<< 550 Unknown user a@docomo.ne.jp"),
            Some(Reason::UserUnknown)
        );
        assert_eq!(
            at("550 Unknown user a@docomo.ne.jp (in reply to end of DATA command)"),
            Some(Reason::Rejected)
        );
    }
}
