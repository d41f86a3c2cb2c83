//! Why a message bounced, in sisimai's reason vocabulary (so numbers compare with the tool most
//! bounce processors are measured against), decided from the evidence a bounce carries.
//!
//! Order of decision: a success code; a label one MTA prints for one cause (`MTA_LABELS`,
//! Gmail's `(state N)`); the rules of a known provider (`rhost`); a *specific* RFC 3463 status
//! code (`5.1.1`, `5.2.2`, ...); the keyword tables over the diagnostic; the remaining (generic)
//! status code classes; the same tables over the text around the recipient; the action and the
//! reply code. The tables are data (`KEYWORDS`, `MTA_LABELS`): extend them for new MTAs'
//! wording rather than adding branches. This module reads evidence only; it parses nothing.

use super::Action;
use super::rhost;

/// The reason names, as stored in the ledger and printed (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    AuthFailure,
    BadReputation,
    Blocked,
    ContentError,
    ExceedLimit,
    Expired,
    Filtered,
    HasMoved,
    HostUnknown,
    MailboxFull,
    MailerError,
    MesgTooBig,
    NetworkError,
    NoRelaying,
    NotAccept,
    NotCompliantRfc,
    PolicyViolation,
    Rejected,
    RequirePtr,
    SecurityError,
    SpamDetected,
    Speeding,
    Suspend,
    SyntaxError,
    SystemError,
    SystemFull,
    TooManyConn,
    UserUnknown,
    VirusDetected,
    /// Not a bounce: an ARF complaint.
    Feedback,
    /// Not a bounce: an RFC 3834 automatic reply.
    Vacation,
    /// Not a bounce: a success DSN.
    Delivered,
    /// A failure whose text says nothing classifiable.
    Undefined,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AuthFailure => "authfailure",
            Reason::BadReputation => "badreputation",
            Reason::Blocked => "blocked",
            Reason::ContentError => "contenterror",
            Reason::ExceedLimit => "exceedlimit",
            Reason::Expired => "expired",
            Reason::Filtered => "filtered",
            Reason::HasMoved => "hasmoved",
            Reason::HostUnknown => "hostunknown",
            Reason::MailboxFull => "mailboxfull",
            Reason::MailerError => "mailererror",
            Reason::MesgTooBig => "mesgtoobig",
            Reason::NetworkError => "networkerror",
            Reason::NoRelaying => "norelaying",
            Reason::NotAccept => "notaccept",
            Reason::NotCompliantRfc => "notcompliantrfc",
            Reason::PolicyViolation => "policyviolation",
            Reason::Rejected => "rejected",
            Reason::RequirePtr => "requireptr",
            Reason::SecurityError => "securityerror",
            Reason::SpamDetected => "spamdetected",
            Reason::Speeding => "speeding",
            Reason::Suspend => "suspend",
            Reason::SyntaxError => "syntaxerror",
            Reason::SystemError => "systemerror",
            Reason::SystemFull => "systemfull",
            Reason::TooManyConn => "toomanyconn",
            Reason::UserUnknown => "userunknown",
            Reason::VirusDetected => "virusdetected",
            Reason::Feedback => "feedback",
            Reason::Vacation => "vacation",
            Reason::Delivered => "delivered",
            Reason::Undefined => "undefined",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a bounce says about one recipient.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    pub status: Option<&'a str>,
    pub reply_code: Option<u16>,
    pub action: Option<Action>,
    /// The remote server's words for this recipient.
    pub diagnostic: &'a str,
    /// Surrounding human-readable text (may repeat the diagnostic).
    pub context: &'a str,
    /// The Diagnostic-Code type (`smtp`, `x-unix`, `x-postfix`), lowercase.
    pub diagnostic_type: Option<&'a str>,
    /// The failed recipient, the server that refused it, and the MTA that wrote the bounce:
    /// they select a provider's own rules (`rhost`).
    pub recipient: Option<&'a str>,
    pub remote_host: Option<&'a str>,
    pub reporting_host: Option<&'a str>,
}

/// The SMTP stage a refusal came at, as far as the text tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
}

/// Phrases naming the command a reply answered, lowercase, most specific first.
const STAGE_PHRASES: &[(Stage, &[&str])] = &[
    (Stage::Rcpt, &["rcpt", "does not like recipient"]),
    (
        Stage::Data,
        &[
            ">>> data",
            "end of data",
            "after data",
            "data command",
            "reply to data",
            "message body",
            "failed after i sent the message",
        ],
    ),
    (
        Stage::Mail,
        &[
            "mail from",
            ">>> mail",
            "after mail",
            "mail command",
            "but sender was rejected",
        ],
    ),
    (
        Stage::Helo,
        &[
            "ehlo",
            "helo",
            "but my name was rejected",
            "refused to talk to me",
        ],
    ),
    (Stage::Connect, &["initial connection", "greeting"]),
];

/// The stage named in `lower` (lowercased text), if any.
pub fn stage(lower: &str) -> Option<Stage> {
    STAGE_PHRASES
        .iter()
        .find(|(_, phrases)| phrases.iter().any(|p| lower.contains(p)))
        .map(|(stage, _)| *stage)
}

/// "Unknown user" phrasings that name the recipient explicitly: a refusal of the address
/// itself, whatever the stage.
const RECIPIENT_UNKNOWN: &[&str] = &[
    "unknown recipient",
    "recipient unknown",
    "recipient not found",
    "no such recipient",
    "recipient does not exist",
    "invalid recipient",
    "no valid recipients",
    "recipient name is not recognized",
    "address couldn't be found",
    "account that you tried to reach does not exist",
    "address not found",
    "check if address is correct",
];

/// sisimai's convention, kept so numbers compare: "no such user" said at RCPT (or with an
/// X.1.x code) is `userunknown`, a hard bounce; said after DATA or at an unknown stage it is
/// the content-stage refusal sisimai calls `filtered`, a soft one.
fn user_or_filtered(e: &Evidence<'_>, lower: &str, context: &str) -> Reason {
    let addressing_code = e
        .status
        .is_some_and(|s| matches!(s.get(1..), Some(".1.0" | ".1.1" | ".1.3" | ".1.4")));
    let at_rcpt = stage(lower).or_else(|| stage(context)) == Some(Stage::Rcpt);
    if addressing_code || at_rcpt || RECIPIENT_UNKNOWN.iter().any(|p| lower.contains(p)) {
        Reason::UserUnknown
    } else {
        Reason::Filtered
    }
}

/// Status codes that name one cause unambiguously: they win over the text.
fn specific_status(status: &str) -> Option<Reason> {
    let (_, detail) = status.split_once('.')?;
    Some(match detail {
        "1.1" => Reason::UserUnknown,
        "1.2" => Reason::HostUnknown,
        "1.6" => Reason::HasMoved,
        "1.8" | "1.7" => Reason::Rejected,
        "1.10" => Reason::NotAccept,
        "2.2" => Reason::MailboxFull,
        "2.3" => Reason::ExceedLimit,
        "3.4" => Reason::MesgTooBig,
        "7.25" => Reason::RequirePtr,
        "7.26" | "7.23" | "7.24" | "7.20" | "7.21" | "7.22" | "7.509" => Reason::AuthFailure,
        "7.27" => Reason::NotAccept,
        "7.13" => Reason::Suspend,
        "7.9" | "7.7" => Reason::PolicyViolation,
        "7.606" | "7.511" => Reason::Blocked,
        _ => return None,
    })
}

/// Causes whose explicit wording outranks a `X.1.1` code.
const ADDRESSING_OVERRIDES: &[Reason] = &[
    Reason::MailboxFull,
    Reason::Blocked,
    Reason::HasMoved,
    Reason::Rejected,
    Reason::AuthFailure,
    Reason::NotAccept,
    Reason::Filtered,
    Reason::Suspend,
];

/// What the remaining codes suggest when no keyword matched (RFC 3463 §3 subjects, read the way
/// sisimai reads them). The class matters for a few: a temporary routing failure is a network
/// problem, a permanent one an unknown host.
fn generic_status(status: &str) -> Option<Reason> {
    let mut it = status.split('.');
    let class = it.next()?;
    let subject = it.next()?;
    let detail = it.next()?;
    let temporary = class == "4";
    Some(match (subject, detail) {
        ("1", "4") => Reason::Filtered,
        ("1", "9") => Reason::SystemError,
        ("1", _) => Reason::UserUnknown,
        ("2", "1") if temporary => Reason::Blocked,
        ("2", "0") | ("2", "1") | ("2", "4") => Reason::Filtered,
        ("2", _) => Reason::MailboxFull,
        ("3", "1") => Reason::SystemFull,
        ("3", "2") => Reason::NotAccept,
        ("3", _) => Reason::SystemError,
        ("4", "1") if temporary => Reason::Expired,
        ("4", "3") => Reason::SystemError,
        ("4", "4") if temporary => Reason::NetworkError,
        ("4", "4") => Reason::HostUnknown,
        ("4", "5") => Reason::SystemFull,
        ("4", "7") => Reason::Expired,
        ("4", _) => Reason::NetworkError,
        ("5", "3") if temporary => Reason::SystemError,
        ("5", "3") => Reason::TooManyConn,
        ("5", "4") | ("5", "5") => Reason::SystemError,
        ("5", _) => Reason::SyntaxError,
        ("6", _) => Reason::ContentError,
        ("7", "1") | ("7", "2") if temporary => Reason::Blocked,
        ("7", "16") => Reason::MesgTooBig,
        ("7", "17") | ("7", "18") => Reason::HasMoved,
        ("7", "28") => Reason::SpamDetected,
        ("7", "29") => Reason::AuthFailure,
        ("7", _) => Reason::SecurityError,
        _ => return None,
    })
}

/// Labels that one MTA prints for one cause (Exchange's `RESOLVER.ADR.RecipNotFound`, Exchange
/// 2003's `(000C05A6)`): unambiguous wherever they appear, so they outrank status codes and
/// provider rules, as the MTA's own classification does. Lowercase.
const MTA_LABELS: &[(Reason, &[&str])] = &[
    (
        Reason::UserUnknown,
        &[
            "resolver.adr.recipnotfound",
            "resolver.adr.recipientnotfound",
            "resolver.adr.exrecipnotfound",
            "(000c05a6)",
        ],
    ),
    (Reason::HostUnknown, &["smtpsend.dns.nonexistentdomain"]),
    (
        Reason::NetworkError,
        &["smtpsend.dns.mxloopback", "(00120270)"],
    ),
    (
        Reason::SystemError,
        &[
            "resolver.adr.badprimary",
            "resolver.adr.invalidinsmtp",
            "resolver.adr.ambiguous",
            "(00010256)",
            "(000d06b5)",
        ],
    ),
    (Reason::TooManyConn, &["resolver.adr.reciplimit"]),
    (
        Reason::SecurityError,
        &["resolver.rst.authrequired", "(000b0981)"],
    ),
    (Reason::Rejected, &["resolver.rst.notauthorized"]),
    (Reason::ExceedLimit, &["resolver.rst.recipsizelimit"]),
    (Reason::Expired, &["queue.expired"]),
    (Reason::Filtered, &["(000c0595)"]),
    (Reason::ContentError, &["(00050311)", "(000502cc)"]),
];

/// Gmail's own bounces end the remote reply with the SMTP state it failed in, `(state 14)`.
fn gmail_state(lower: &str) -> Option<Reason> {
    let start = lower.find(" (state ")? + " (state ".len();
    let digits: String = lower[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if !lower[start + digits.len()..].starts_with(')') {
        return None;
    }
    Some(match digits.as_str() {
        "6" | "9" => Reason::SecurityError,
        "8" => Reason::SystemError,
        "12" => Reason::NoRelaying,
        "13" => Reason::Blocked,
        "14" => Reason::UserUnknown,
        "15" | "17" | "18" => Reason::Filtered,
        _ => return None,
    })
}

fn mta_label(lower: &str) -> Option<Reason> {
    MTA_LABELS
        .iter()
        .find(|(_, labels)| labels.iter().any(|l| lower.contains(l)))
        .map(|(r, _)| *r)
}

/// Keyword tables, lowercase substrings, in priority order: the first reason with a matching
/// phrase wins. Earlier rows hold the more specific phrases (a DNSBL listing mentions "spam"
/// but is a block; a full mailbox may mention the user).
pub const KEYWORDS: &[(Reason, &[&str])] = &[
    (
        Reason::SystemFull,
        &[
            "mailbox unavailable (not enough free space)",
            "mail system full",
            "requested mail action aborted: exceeded storage allocation",
        ],
    ),
    (
        Reason::SecurityError,
        &["you don't authenticate or the domain isn't in my list"],
    ),
    (
        Reason::UserUnknown,
        &["domain or user isn't in my list of allowed rcpthosts"],
    ),
    (
        Reason::Blocked,
        &[
            "error: no valid recipients from",
            "but my name was rejected",
        ],
    ),
    (
        Reason::NoRelaying,
        &["that domain isn't in my list of allowed rcpthost"],
    ),
    (
        Reason::NoRelaying,
        &[
            "relay access denied",
            "relaying denied",
            "relay not permitted",
            "relaying not permitted",
            "unable to relay",
            "relay denied",
            "we do not relay",
            "not permitted to relay",
            "relaying not allowed",
            "relaying mail to",
            "no relaying",
            "not allowed to relay",
            "relay not allowed",
            "insecure mail relay",
            "open relay",
            "due to the following smtp relay error",
            "as a relay",
            "requires authentication when attempting to send to a non-local",
            "not a gateway",
            "not an open relay, so get lost",
            "not local host",
            "specified domain is not allowed",
            "this system is not configured to relay mail",
            "we don't handle mail for",
        ],
    ),
    (
        Reason::MailboxFull,
        &[
            "mailbox full",
            "mailbox is full",
            "mail box full",
            "mailbox has exceeded",
            "mailbox exceeded",
            "over quota",
            "overquota",
            "over the quota",
            "quota exceeded",
            "exceeded quota",
            "exceeds quota",
            "quota exceed",
            "exceeded storage allocation",
            "exceeded its storage",
            "mailbox size limit",
            "mailfolder is full",
            "mail folder is full",
            "user is over",
            "is over its quota",
            "not enough storage",
            "insufficient storage",
            "recipient's mailbox is full",
            "full mailbox",
            "mailbox is over",
            "account is full",
            "exceeded the local limit",
            "mailbox exceeds",
            "inbox is full",
            "storage limit",
            "quota full",
            "disk quota",
            "too much mail data",
            "insufficient disk space",
            "not sufficient disk space",
            "no space left on device",
            "boite du destinataire pleine",
            "mailbox would exceed",
            "quota violation",
            "too many messages on the server",
            "space has been used up",
            "mailbox*full",
            "over*quota",
            "quota*exceeded",
            "mailbox*quota",
            "maildir*quota",
            "account disabled temporarly for exceeding receiving limits",
            "user has exceeded quota",
            "account is*quota",
            "enough*space",
            "mailbox*exceeded*limit",
        ],
    ),
    (
        Reason::TooManyConn,
        &[
            "too many connections",
            "connection limit",
            "too many simultaneous",
            "too many concurrent",
            "too many smtp sessions",
            "too many sessions",
            "connection rate",
            "too many open connections",
            "frequency limited",
            "too many recipients",
            "all available ips are at maximum connection limit",
            "exceeds per-domain connection limit",
            "has exceeded the max emails per hour",
            "throttling failure: daily message quota exceeded",
            "throttling failure: maximum sending rate exceeded",
            "too many errors from your ip",
            "trop de connexions",
            "we have already made numerous attempts to deliver this message",
        ],
    ),
    (
        Reason::ExceedLimit,
        &[
            "message too large for this recipient",
            "exceeds the recipient's limit",
            "exeeded the maximum size the user accepts",
        ],
    ),
    (
        Reason::MesgTooBig,
        &[
            "message too large",
            "message is too large",
            "message too big",
            "message is too big",
            "message size exceeds",
            "message exceeds",
            "exceeds maximum message size",
            "exceeds size limit",
            "exceeded maximum inbound message size",
            "message length exceeds",
            "size limit exceeded",
            "mail size limit",
            "message size limit",
            "too large for",
            "size exceeds the maximum",
            "line limit exceeded",
            "line too long",
            "exceeded the maximum incoming message size",
            "max message size exceeded",
            "message file too big",
            "message header size exceeds limit",
            "size exceeds maximum value",
            "taille limite du message atteinte",
        ],
    ),
    (
        Reason::VirusDetected,
        &["virus", "malware", "infected", "trojan"],
    ),
    (
        Reason::Suspend,
        &[
            "account disabled",
            "account has been disabled",
            "account is disabled",
            "account that you tried to reach is disabled",
            "mailbox disabled",
            "mailbox is disabled",
            "account suspended",
            "account is suspended",
            "account has been suspended",
            "has been suspended",
            "suspended",
            "deactivated",
            "account is inactive",
            "mailbox is inactive",
            "inactive account",
            "account is locked",
            "account has been locked",
            "account is blocked",
            "disabled or discontinued",
            "temporarily disabled",
            "is not active",
            "account expired",
            "has been terminated",
            "blocked for receiving",
            "is currently suspended",
            "temporary locked",
            "archived recipient",
            "boite du destinataire archivee",
            "deactivated mailbox",
            "user is terminated",
            "mailbox is frozen",
            "temporarily inactive",
            "mailbox currently suspended",
            "user or domain is disabled",
            "user suspended",
            "account is locked",
            "invalid/inactive user",
            "recipient suspend the service",
            "vdelivermail: account is locked",
            "mailaddress is administrativ",
            "account is temporarily limited",
        ],
    ),
    (
        Reason::HasMoved,
        &[
            "has moved",
            "no longer on server",
            "address has changed",
            "has changed his address",
            "user has moved",
            "moved to a new",
            " has been replaced by ",
        ],
    ),
    (
        Reason::SecurityError,
        &[
            "unauthenticated senders",
            "authentication required",
            "must issue a starttls",
            "tls required",
            "encryption required",
            "account not subscribed to ses",
            "authentication credentials invalid",
            "authentication failure",
            "authentication turned on in your email client",
            "executable files are not allowed in compressed files",
            "verification failure",
            "you are not authorized to send mail, authentication is required",
            "authentication failed; server*said: ",
            "is a dead domain",
            "is not authorized to perform ses:sendrawemail",
            "security alert",
            "could not retrieve credentials",
        ],
    ),
    (
        Reason::SpamDetected,
        &[
            "spam classification",
            "classified as spam",
            "detected as spam",
            "considered spam",
            "looks like spam",
            "spam message",
            "spam score",
            "spam content",
            "message content rejected",
            "content rejected",
            "ube",
            "junk mail",
            "url in message",
            "blacklisted url",
            "appears to be unsolicited",
            "block for spam",
            "spamassassin",
            "content filter rejection",
            "probability of spam",
            "mail content denied",
            "considered as spam",
            "contains spam",
            "rejected as spam",
            "unacceptable content",
            "suspected spam",
            "seems to be a spam",
            "spamprofiler",
            "probable spam",
            "bulk email",
            "banned content",
            "spam-like",
            "spam detected",
            "spam blocked",
            "spam not accepted",
            "spam refused",
            "spam rejection",
            "identified as spam",
            "scored as spam",
            "failed several antispam",
            "triggered a spam block",
            "due to spam",
            "uribl",
            "surbl",
            "help_spam_16.htm",
            "554 5.7.0 reject, id=",
            "no spam please",
            "blocked for abuse. see http://att.net/blocks",
            "unsolicited bulk e-mail",
            "anti spam engine has identified",
            "denied due to spam list",
            "is classified as spam",
            "drbl.imedia.ru",
            "detected your message as spam",
            "may consider spam",
            "spam or virus",
            "message filtered. please see the faqs section on spam",
            "message filtered. refer to the troubleshooting page",
            "thinks this email is spam",
            "reject bulk.advertising",
            "rejecting mail content",
            "sender domain listed at",
            "not accepted due to spam filter",
            "spam check",
            "spam email",
            "spambouncer",
            "spamming not allowed",
            "too many spam complaints",
            "too much spam.",
            "spam filtering engine",
            "classification as bulk mail",
            "looked like spam",
            "appears to be spam",
            "recurrent pattern detection system",
            "spam message not queued",
            "dont accept spam",
            "similar to spam",
            "is probably spam",
            "temporarily blocked by our filter",
            "may contain the spam contents",
            "mail score (*over",
            "rejected due to spam*classification",
            "this message scored*spam points",
            "rule imposed as*is blacklisted on",
            "greylisted*please try again in",
        ],
    ),
    (
        Reason::AuthFailure,
        &[
            "dmarc",
            "spf check",
            "spf fail",
            "spf validation",
            "spf record",
            "sender policy framework",
            "dkim",
            "not pass authentication",
            "unauthenticated email",
            "domainkeys",
            "spf.pobox.com",
            "bad spf records for",
            "spf settings",
            "spf check: fail",
            "5322.from address doesn't meet the authentication",
            " is not allowed to send mail.*_401",
            "per it's spf record",
        ],
    ),
    (
        Reason::RequirePtr,
        &[
            "reverse dns",
            "ptr record",
            "no ptr",
            "reverse lookup",
            "rdns",
            "cannot find your hostname",
            "cannot resolve your",
            "reverse hostname",
            "reverse-dns",
            "no reverse",
            "ip name lookup failed",
            "dns ptr",
            "unresolvable ip",
            "not have a ptr",
            "host name is not resolved",
            "pointer record",
            "mismatches client ip",
            "unresolvable relay host name",
            "dns lookup failure:*try again later",
            "unverifyable sending ips",
        ],
    ),
    (
        Reason::BadReputation,
        &["reputation", "sender score", "user complaints"],
    ),
    (
        Reason::NotCompliantRfc,
        &[
            "rfc 5322",
            "rfc5322",
            "rfc 2822",
            "rfc2822",
            "rfc 822",
            "not rfc",
            "not compliant",
            "duplicate header",
            "multiple from",
            "multiple addresses in",
            " multiple * header",
            "p=rfcmessagenoncompliant",
        ],
    ),
    (
        Reason::NotAccept,
        &[
            "does not accept mail (nullmx)",
            "host/domain does not accept mail",
            "host does not accept mail",
            "mail receiving disabled",
            "name server: .: host not found",
            "no mx record found for domain=",
            "no route for current request",
            "smtp protocol returned a permanent error",
            "an mx or srv record indicated no smtp service",
            "no host found for existing smtp connection",
            "destination seem to reject all mails",
            "no mx found for domain",
            "no mx found for destination",
        ],
    ),
    (
        Reason::Rejected,
        &[
            "sender address rejected",
            "sender rejected",
            "sender denied",
            "sender verify failed",
            "sender verification",
            "domain of sender address",
            "sender domain",
            "sender not allowed",
            "rejected sender",
            "invalid sender",
            "bad sender",
            "unknown sender",
            "sender address",
            "address of the sender",
            "sender is not allowed",
            "we do not accept mail from",
            "envelope sender",
            "mail from address",
            "from address rejected",
            "sender was rejected",
            "blocked sender",
            "not accepting mail from you",
            "access denied (in reply to mail from",
            "sender blacklisted",
            "administrative prohibition",
            "batv",
            "backscatter",
            "recipient's list of senders",
            "bogus mail from",
            "purported responsible address",
            "without a valid sender domain",
            "empty envelope sender",
            "null sender",
            "not a registered gateway user",
            "mail from not owned by user",
            "email address is not verified",
            "returned mail not accepted",
            "sender is in my black list",
            "sender is spammer",
            "sender not pre-approved",
            "not allowed to post to this mailing list",
            "your email address has been blacklisted",
            "group you tried to contact",
            "permission to post",
            "groups.google.com/support",
            "denied [bouncedeny]",
            "valid-address-filter",
            "delivery not authorized, message refused",
            "does not exist e2110",
            "senderfilterconfig list",
            "emetteur invalide",
            "envelope blocked - ",
            "no third-party dsns",
            "from: domain is invalid",
            "fully qualified email address required",
            "invalid domain, see <url:",
            "recipient addresses rejected : access denied",
            "batv: no tag",
            "recursive cname records for",
            "rule imposed mailbox access for",
            "sending this from a different address or alias using the ",
            "sender email address rejected",
            "sender domain is empty",
            "spam reporting address",
            "syntax error: empty email address",
            "this server does not accept mail from",
            "unsigned dsn for",
            "unroutable sender address",
            "an address that has been blacklisted",
            "your access to submit messages to this e-mail system has been rejected",
            " are not member",
            "not member article from ",
            "reject mail from ",
            "spam mail from a spammer is rejected",
            " header may cause mail loop",
            "reject spammers:",
            "you are not a member of this mailing list",
        ],
    ),
    (
        Reason::Filtered,
        &[
            "refused due to recipient preferences",
            "recipient is only accepting mail from specific",
            "is not accepting any mail",
            "blocked by the recipient",
            "user refuses to receive",
            "refuse to receive mail",
            "rejected due to user rules",
            "message filtered",
            "user reject",
            "account is protected by",
            "bounced address",
            "has restricted sms e-mail",
            "not found recipient account",
            "recipient id refuse to receive mail",
            "you have been blocked by the recipient",
            "cannot route mail to user",
            "mail delivery failed... user unknown",
        ],
    ),
    (
        Reason::UserUnknown,
        &[
            "user unknown",
            "unknown user",
            "no such user",
            "user not found",
            "user does not exist",
            "user doesn't exist",
            "user doesn't have",
            "recipient not found",
            "recipient unknown",
            "unknown recipient",
            "recipient does not exist",
            "no such recipient",
            "invalid recipient",
            "recipient name is not recognized",
            "mailbox not found",
            "mailbox does not exist",
            "mailbox unavailable",
            "no such mailbox",
            "no mailbox",
            "invalid mailbox",
            "not a valid mailbox",
            "unknown mailbox",
            "mailbox is unavailable",
            "account does not exist",
            "account that you tried to reach does not exist",
            "address does not exist",
            "addressee unknown",
            "address unknown",
            "unknown address",
            "no such address",
            "address not found",
            "address couldn't be found",
            "unknown local part",
            "unknown local-part",
            "no account",
            "is not a known user",
            "bad destination mailbox",
            "no valid recipients",
            "does not exist",
            "doesn't exist",
            "not our customer",
            "unknown or illegal alias",
            "not a valid user",
            "invalid address",
            "user account is unavailable",
            "destination address rejected",
            "wasn't found at the destination",
            "no such local user",
            "user is unknown",
            "unknown account",
            "address invalid",
            "address not present in directory",
            "can't accept user",
            "destination addresses were unknown",
            "email address could not be found",
            "is not an active address",
            "mailbox invalid",
            "no account by that name",
            "no mail box available",
            "no mailbox here by that name",
            "no such person",
            "not a valid recipient",
            "not a local address",
            "recipient is not local",
            "recipient not ok",
            "recipientnotfound",
            "badrcptto",
            "there is no one at this address",
            "no longer accepts mail",
            "user not known",
            "utilisateur inconnu",
            "nessun utente",
            "no existe",
            "unknown virtual user",
            "adresse nicht gefunden",
            "check if address is correct",
            "#5.1.1 bad address",
            "550 address invalid",
            "5.1.0 address rejected.",
            "destination server rejected recipients",
            "invalid mailbox path",
            "mailbox not present",
            "mailbox unavaiable",
            "no existe dicha persona",
            "no mailbox by that name is currently available",
            "no mailbox found",
            "account unavailable",
            "not email addresses",
            "recipient address rejected. (in reply to rcpt to command)",
            "recipient address rejected: access denied",
            "recipient address rejected: invalid user",
            "recipient address rejected: invalid-recipient",
            "recipient address rejected: unknown user",
            "recipient address rejected: userunknown",
            "recipient is not accepted",
            "recipient not exist",
            "recipient refuses to accept your mail",
            "requested action not taken: mailbox unavailable",
            "resolver.adr.recipient notfound",
            "your envelope recipient has been denied",
            "the following recipients was undeliverable",
            "email name is not found",
            "this email address is wrong or no longer valid",
            "badrecipientto list",
            "validrcptto list",
            "this spectator does not exist",
            "user missing home directory",
            "user not active",
            "user not exist",
            "badrcptto list",
            "does not exist at the organization",
            "bad*recipient",
            "unavailable or access denied",
            "in name directory",
            "non*existent user",
            "was not found in",
            "user (*) unknown",
            "unknown e*mail address",
            "this user doesn't have a*account",
            "not listed in public name & address book",
            "ディレクトリのリストにありません",
            "not listed in domino directory",
            "no se encuentra en el directorio de domino",
            "non répertorié dans l'annuaire domino",
            "domino ディレクトリには見つかりません",
            "non r*pertori*dans l'annuaire domino",
            "invalid final delivery userid",
        ],
    ),
    (Reason::ContentError, &["too many \"received\" headers"]),
    (
        Reason::NetworkError,
        &[
            "host not found, try again",
            "malformed or unexpected name server reply",
            "malformed name server reply",
            "dns records for the destination computer could not be found",
            "host is unreachable",
            "could not connect and send the mail to",
            "mail forwarding loop for",
            "maximum forwarding loop count exceeded",
            "message looping",
            "message probably in a routing loop",
            "unable to resolve route",
            "exceeded maximum hop count",
            "although i'm listed as a best-preference mx",
            "address family mismatch on destination mxs",
            "all routes to destination blocked",
            "bad dns lookup error code",
            "could not retrieve source address",
            "network error on destination mxs",
            "no valid route to remote mx",
            "no valid route to destination",
            "temporary failure in mx lookup",
        ],
    ),
    (
        Reason::HostUnknown,
        &[
            "host unknown",
            "unknown host",
            "host not found",
            "host or domain name not found",
            "domain not found",
            "no such domain",
            "domain does not exist",
            "domain name not found",
            "unrouteable mail domain",
            // Exim: no router could resolve the domain.
            "unrouteable address",
            "unknown domain",
            "name or service not known",
            "illegal host/domain",
            "domain is not valid",
            "no mail host",
            "domain is not reachable",
            "domain must exist",
            "host unreachable",
            "mail domain mentioned in email address is unknown",
            "unknown domain name",
            "may not exist",
            "unroutable address",
            "recipient domain must exist",
            "all host address lookups failed permanently",
            "all relevant mx records point to non-existent hosts",
            "sorry, i couldn't find any host ",
            "as the remote domain doesnt exist",
            "dns server returned answer with no data",
            "invalid domain name",
            "dns lookup failure: host ",
        ],
    ),
    (
        Reason::Speeding,
        &[
            "rate limit",
            "rate-limit",
            "ratelimit",
            "too many messages",
            "sending rate",
            "throttl",
            "too much mail",
            "unusual rate",
            "too many emails",
            "at a rate that",
            "please try again slower",
        ],
    ),
    (
        Reason::SystemError,
        &[
            "this domain's dns violates rfc 1035",
            "fml system error message",
            "loop alert: ",
            "loop back warning",
            "warning: unix from loop",
            " has detected a loop condition so that",
        ],
    ),
    (
        Reason::PolicyViolation,
        &[
            "potential security issue",
            "header error",
            "illegal attachment",
            "members-only list",
            "closed mailing list",
            "denied by policy",
            "rejected due to security policies",
            "local policy violation",
            "organizational settings",
            "organization policy",
            "not subscribed to this group",
            "multiple addresses",
            "protocol violation",
            "mass mailer",
            "policy reasons",
            "local policy",
            "violates",
            "violation",
            "because the recipient is not accepting mail with",
            "header are not accepted",
            "message given low priority",
            "rejected for policy reasons",
            "we do not accept messages containing images or other attachments",
            "allowable number of posts without solving a captcha",
            "content presents a potential",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "blacklist",
            "black list",
            "blocklist",
            "block list",
            "dnsbl",
            " rbl",
            "spamhaus",
            "spamcop",
            "listed in",
            "listed at",
            "client host rejected",
            "ip address is blocked",
            "has been blocked",
            "access denied",
            "connection refused",
            "banned",
            "blocked",
            "not allowed to send",
            "denied by",
            "smtp server of your isp",
            "blocked using",
            "blacklisted by",
            "bad sender ip",
            "banned sending ip",
            "helo command rejected",
            "dynamic ip",
            "not currently accepting mail from your ip",
            "rejecting open proxy",
            "sender ip address rejected",
            "your ip address is listed",
            "you are not allowed to connect",
            "after initial connection",
            "not accepting connections",
            "too many spams from your ip",
            "temporary blacklisted",
            "is in a black list",
            " said: 550 blocked",
            "spamcop.net/bl.",
            "dnsbl:attrbl",
            "abus detecte",
            "may not be mail exchanger",
            "confirm this mail server",
            "connection dropped",
            "connection refused by",
            "connection was dropped by remote host",
            "dynamic/zombied/spam ips blocked",
            "extreme bad ip profile",
            "go away",
            "hosts with dynamic ip",
            "invalid ip for sending mail of domain",
            "no access from mail server",
            "no matches to nameserver query",
            "part of their network is on our block list",
            "refused - see http",
            "multi-blacklist",
            "sending mta or the sender has not passed validation",
            "forbidden by your ip",
            "service not available, closing transmission channel",
            "looks suspiciously like spammer",
            "too many unwanted messages have been sent",
            "was blocked by ",
            "we do not accept mail from dynamic ips",
            "you are sending spam",
            "your server requires confirmation",
            "currently sending spam",
            "access from ip address*blocked",
            "client host*blocked using",
            "rbl on ",
            "mail server at*is blocked",
            "rejected based on blacklist",
            "listed as abusive",
            "is blacklisted",
            "your access ip*has been rejected",
            "email blocked by*spamhaus",
            "barracudacentral.org",
            "host network not allowed",
        ],
    ),
    (
        Reason::SpamDetected,
        &[
            "spam",
            "bulk mail",
            "unsolicited",
            "suspicious",
            "scam",
            "phishing",
        ],
    ),
    (
        Reason::PolicyViolation,
        &[
            "policy",
            "prohibited",
            "not accepted for",
            "not authorized",
            "attachment",
            "network not allowed",
        ],
    ),
    (
        Reason::NotAccept,
        &[
            "does not accept mail",
            "does not accept e-mail",
            "does not accept email",
            "not accepting mail",
            "null mx",
            "accepts no mail",
            "couldn't find a mail exchanger",
        ],
    ),
    (
        Reason::SystemError,
        &[
            "it would create a mail loop",
            "loop was found in the mail exchanger",
            "loops back to myself",
            "aliasing/forwarding loop broken",
            "local configuration error",
            "local error in processing",
            "mail system configuration error",
            "server configuration error",
            "queue file write error",
            "can't create user output file",
            "could not load drd for domain",
            "internal error reading data",
            "interrupted system call",
            "encountered an error while being processed",
            "there is no mdb",
            "remote server is misconfigured",
            "service currently unavailable",
            "temporary local problem",
            "timeout waiting for input",
            "unable to connect*daemon",
            "delivery to file forbidden",
            "delivery to pipe forbidden",
            "lmtp error after ",
            "automatic homedir creator crashed",
            "illegal value in ldap attribute",
            "ldap attribute is not given but mandatory",
            "timeout while performing search on ldap server",
            "too many results returned but needs to be unique",
            "error while executing qmail-forward",
            "error in automatic homedir creation",
            "failure in ldap lookup",
            "unable to contact ldap server",
            "unable to login into ldap server",
            "bad interpreter: no such file or directory",
            "several matches found in domino directory",
        ],
    ),
    (
        Reason::NetworkError,
        &[
            "host name lookup failure",
            "dns query failed",
            "name server",
            "dns error",
            "dns lookup",
            "lookup failure",
            "mail loop",
            "too many hops",
            "loop detected",
            "loops back",
            "hop count",
            "nxdomain",
        ],
    ),
    (
        Reason::Filtered,
        &[
            "filter",
            "refused by",
            "recipient refused",
            "rejected by recipient",
        ],
    ),
    (
        Reason::Expired,
        &[
            "message expired",
            "delivery time expired",
            "retry time",
            "in the queue too long",
            "in queue too long",
            "could not be delivered within",
            "retry timeout exceeded",
            "unable to deliver in",
            "expired",
            "has not been delivered for",
            "failing for a long time",
            "delivery expired",
            "could not find a gateway for",
            "failed to deliver to domain",
            "has been delayed",
            "not been collected after",
            "message timed out",
            "retry time not reached",
            "server did not respond",
            "after multiple retries",
            "within the allowed queue period",
            "could not be delivered for more than",
            "not delivered within",
            "delivery failed*attempts",
            "warning message only",
            "delivery attempts will continue",
            "will keep trying",
            "still trying",
            "connection timed out",
            "timed out",
            "did not accept our requests to connect",
            "no action is required on your part",
            "delay reason: ",
            "has been frozen",
            "was frozen on arrival by",
            "your message was not delivered within ",
            "host not reachable",
            "dns error: could not contact dns servers",
            "delivery to the following recipient has been delayed",
            "could not deliver for the last ",
        ],
    ),
    (
        Reason::NetworkError,
        &[
            "network error",
            "timeout",
            "no route to host",
            "could not connect",
            "unable to connect",
            "couldn't connect",
            "network is unreachable",
            "connection reset",
            "establish an smtp connection",
        ],
    ),
    (
        Reason::MailerError,
        &[
            "mailer error",
            "command failed",
            "exit code",
            "procmail",
            "command died",
            "mail.local",
            "pipe to",
            "unknown mailer",
            "local delivery failed",
            " || exit ",
            "bin/maidrop",
            "command output:",
            "pipe to |/",
        ],
    ),
    (
        Reason::ContentError,
        &[
            "headers too large",
            "header too long",
            "too many headers",
            "invalid header",
            "message header",
            "header size",
            "8-bit",
            "8bit",
            "media error",
            "invalid mime",
            "mime error",
            "malformed mime",
            "content error",
            "illegal character",
            "invalid message",
            "encoding",
            "header size exceeds maximum permitted",
            "recipient list, exceeds policy limit",
            "mime complexity exceeds",
            "invalid mime headers",
            "improperly-formatted binary content",
            "unnecessary base64 encoding",
        ],
    ),
    (
        Reason::SecurityError,
        &["starttls", "certificate", "unauthenticated"],
    ),
    (
        Reason::SyntaxError,
        &[
            "syntax error",
            "command unrecognized",
            "unrecognized command",
            "bad command sequence",
            "command not recognized",
            "invalid command",
            "not implemented",
            "malformed address",
            "malformed",
            "angle-brackets nested too deep",
            "expected word or \"<\"",
            "domain missing in source-routed address",
        ],
    ),
    (
        Reason::SystemError,
        &[
            "system error",
            "internal error",
            "server error",
            "local error",
            "mail system error",
            "system config error",
            "requested action aborted",
            "temporary failure",
            "service unavailable",
            "currently unavailable",
            "try again later",
            "i/o error",
            "write error",
            "out of memory",
        ],
    ),
];

/// The first reason whose phrases occur in `text` (lowercased by the caller). A phrase
/// `a*b` matches `a` followed anywhere later by `b` ("mailbox is completely full"); a phrase
/// may hold several `*`.
pub fn match_keywords(lower: &str) -> Option<Reason> {
    KEYWORDS
        .iter()
        .find(|(_, phrases)| phrases.iter().any(|p| phrase_in(lower, p)))
        .map(|(reason, _)| *reason)
}

fn phrase_in(text: &str, phrase: &str) -> bool {
    let mut parts = phrase.split('*');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        return text.contains(phrase);
    }
    text.match_indices(first)
        .any(|(i, _)| parts_follow(&text[i + first.len()..], &rest))
}

/// The longest gap a `*` in a keyword phrase spans, in bytes: the parts belong to one
/// sentence, or "bad ... recipient" would match across a whole bounce text.
const MAX_GAP: usize = 80;

/// Each of `parts` occurs in order in `text`, each within `MAX_GAP` of the previous one.
fn parts_follow(text: &str, parts: &[&str]) -> bool {
    match parts.split_first() {
        None => true,
        Some((part, more)) => text
            .match_indices(part)
            .take_while(|(j, _)| *j <= MAX_GAP)
            .any(|(j, _)| parts_follow(&text[j + part.len()..], more)),
    }
}

/// Decides the reason for one recipient.
pub fn classify(e: &Evidence<'_>) -> Reason {
    if e.status.is_some_and(|s| s.starts_with('2'))
        || matches!(
            e.action,
            Some(Action::Delivered | Action::Relayed | Action::Expanded)
        )
    {
        return Reason::Delivered;
    }
    let diagnostic = e.diagnostic.to_lowercase();
    let context = e.context.to_lowercase();
    if let Some(reason) = mta_label(&diagnostic).or_else(|| mta_label(&context)) {
        return reason;
    }
    // A provider that documents its refusal texts knows best what they mean.
    if let Some(provider) = rhost::provider(e.recipient, e.remote_host, e.reporting_host) {
        // A DSN's Diagnostic-Code is the server's whole reply; a text bounce's diagnostic is
        // one line of it, so the surrounding text may hold the rest.
        let found = rhost::classify(provider, e.status, e.reply_code, e.diagnostic, e.context)
            .or_else(|| {
                e.diagnostic_type.is_none().then(|| {
                    rhost::classify(provider, e.status, e.reply_code, e.context, e.context)
                })?
            });
        if let Some(reason) = found {
            return reason;
        }
    }
    if let Some(state) = gmail_state(&diagnostic).or_else(|| gmail_state(&context)) {
        // A code that names a cause still wins over the state ("5.2.2 ... (state 14)").
        let named = e
            .status
            .filter(|s| !s.contains(".0"))
            .and_then(specific_status);
        return named.unwrap_or(state);
    }
    if let Some(reason) = e.status.and_then(specific_status) {
        // A canned addressing code (MTAs often write 5.1.1 for any refusal at RCPT) yields to
        // words that name another cause: a full mailbox, a block, a moved user, the sender.
        if reason == Reason::UserUnknown {
            let words = match_keywords(&e.diagnostic.to_lowercase());
            if let Some(other) = words.filter(|r| ADDRESSING_OVERRIDES.contains(r)) {
                return other;
            }
        }
        return reason;
    }
    let temporary = e.status.map_or(e.reply_code.is_some_and(|c| c < 500), |s| {
        s.starts_with('4')
    });
    let mut found = match_keywords(&diagnostic).map(|r| (r, &diagnostic));
    if found.is_none() {
        // A local delivery program's exit status says more than the prose around it.
        if matches!(e.diagnostic_type, Some("x-unix")) {
            return Reason::MailerError;
        }
        // So does a code that names a cause; surrounding prose is often boilerplate
        // ("I'm not going to try again; this message has been in the queue too long").
        if let Some(reason) = e
            .status
            .filter(|s| !s.ends_with(".0.0"))
            .and_then(generic_status)
        {
            return reason;
        }
        found = match_keywords(&context).map(|r| (r, &context));
    }
    match found {
        Some((Reason::UserUnknown, text)) => return user_or_filtered(e, text, &context),
        // A host that cannot be found *yet* (a 4xx DNS failure) is a network problem.
        Some((Reason::HostUnknown, _)) if temporary => return Reason::NetworkError,
        Some((reason, _)) => return reason,
        None => {}
    }
    if let Some(reason) = e
        .status
        .filter(|s| !s.ends_with(".0.0"))
        .and_then(generic_status)
    {
        return reason;
    }
    if e.action == Some(Action::Delayed) || e.status.is_some_and(|s| s.starts_with('4')) {
        return Reason::Expired;
    }
    match e.reply_code {
        // Replies about the command itself (RFC 5321 §4.2.2: syntax, parameters, sequence).
        Some(401..=407 | 500..=507) => Reason::SyntaxError,
        Some(400..=499) => Reason::Expired,
        Some(556) => Reason::NotAccept,
        Some(552) => Reason::MailboxFull,
        Some(554 | 571) => Reason::Blocked,
        Some(521) => Reason::NotAccept,
        Some(525) => Reason::Suspend,
        Some(_) | None => Reason::Undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(status: Option<&str>, diagnostic: &str) -> Reason {
        classify(&Evidence {
            status,
            diagnostic,
            ..Evidence::default()
        })
    }

    #[test]
    fn specific_status_codes_decide() {
        assert_eq!(reason(Some("5.1.1"), "whatever"), Reason::UserUnknown);
        assert_eq!(reason(Some("5.1.2"), ""), Reason::HostUnknown);
        assert_eq!(reason(Some("4.2.2"), ""), Reason::MailboxFull);
        assert_eq!(reason(Some("5.1.10"), ""), Reason::NotAccept);
        assert_eq!(
            reason(Some("5.7.26"), "unauthenticated"),
            Reason::AuthFailure
        );
        assert_eq!(reason(Some("2.0.0"), ""), Reason::Delivered);
    }

    #[test]
    fn keyword_tables_decide_generic_codes() {
        assert_eq!(
            reason(
                Some("5.0.0"),
                ">>> RCPT To:<a@b.example> <<< 550 Unknown user"
            ),
            Reason::UserUnknown
        );
        // sisimai's convention: the same words after DATA (or at an unknown stage) are a
        // content-stage refusal.
        assert_eq!(reason(Some("5.0.0"), "550 Unknown user"), Reason::Filtered);
        assert_eq!(
            reason(Some("5.7.1"), "Relay access denied"),
            Reason::NoRelaying
        );
        assert_eq!(
            reason(
                Some("5.7.1"),
                "Client host rejected: listed in zen.spamhaus.org"
            ),
            Reason::Blocked
        );
        assert_eq!(
            reason(Some("5.7.1"), "Message content rejected, UBE"),
            Reason::SpamDetected
        );
        assert_eq!(reason(None, "Mailbox full"), Reason::MailboxFull);
        assert_eq!(
            reason(None, "message size exceeds fixed limit"),
            Reason::MesgTooBig
        );
        assert_eq!(
            reason(None, "Sender address rejected: Domain not found"),
            Reason::Rejected
        );
        assert_eq!(
            reason(None, "Host or domain name not found"),
            Reason::HostUnknown
        );
        assert_eq!(reason(None, "no route to host"), Reason::NetworkError);
        // A connection that kept timing out until the queue gave up: the delay expired.
        assert_eq!(reason(None, "connection timed out"), Reason::Expired);
        assert_eq!(reason(None, "account has been disabled"), Reason::Suspend);
        assert_eq!(
            reason(None, "virus found in message"),
            Reason::VirusDetected
        );
    }

    #[test]
    fn fallbacks_use_code_classes_action_and_reply_code() {
        assert_eq!(
            reason(Some("5.6.0"), "nothing useful"),
            Reason::ContentError
        );
        assert_eq!(
            reason(Some("4.4.2"), "nothing useful"),
            Reason::NetworkError
        );
        // No answer from the host, retried until the queue gave up.
        assert_eq!(reason(Some("4.4.1"), "nothing useful"), Reason::Expired);
        // Routing: temporary is the network, permanent is the host.
        assert_eq!(
            reason(Some("4.4.4"), "nothing useful"),
            Reason::NetworkError
        );
        assert_eq!(reason(Some("5.4.4"), "nothing useful"), Reason::HostUnknown);
        assert_eq!(reason(Some("5.5.3"), "nothing useful"), Reason::TooManyConn);
        let delayed = classify(&Evidence {
            action: Some(Action::Delayed),
            diagnostic: "nothing useful",
            ..Evidence::default()
        });
        assert_eq!(delayed, Reason::Expired);
        let e = Evidence {
            reply_code: Some(556),
            diagnostic: "nothing useful",
            ..Evidence::default()
        };
        assert_eq!(classify(&e), Reason::NotAccept);
        assert_eq!(reason(None, "nothing useful"), Reason::Undefined);
    }

    #[test]
    fn gmail_states_name_the_stage_unless_a_code_names_the_cause() {
        assert_eq!(
            reason(
                Some("5.7.1"),
                "554 554 5.7.1 Service unavailable; client host blocked (state 13)."
            ),
            Reason::Blocked
        );
        assert_eq!(
            reason(
                Some("5.2.2"),
                "550 550 5.2.2 <a@b.example>... Mailbox Full (state 14)."
            ),
            Reason::MailboxFull
        );
        assert_eq!(
            reason(None, "550 550 Unknown user a@b.example (state 18)."),
            Reason::Filtered
        );
    }

    #[test]
    fn mta_labels_outrank_the_status_code() {
        assert_eq!(
            reason(
                Some("5.1.0"),
                "550 5.1.0 RESOLVER.ADR.InvalidInSmtp; invalid"
            ),
            Reason::SystemError
        );
        assert_eq!(
            reason(None, "MSEXCH:IMS:EXAMPLE 0 (000C05A6) Unknown Recipient"),
            Reason::UserUnknown
        );
    }

    #[test]
    fn provider_rules_apply_only_to_their_hosts() {
        let yahoo = |remote_host| {
            classify(&Evidence {
                status: Some("4.7.0"),
                diagnostic: "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred \
                             due to unexpected volume or user complaints",
                recipient: Some("a@example.org"),
                remote_host,
                ..Evidence::default()
            })
        };
        assert_eq!(yahoo(Some("mta7.am0.yahoodns.net")), Reason::Rejected);
        assert_eq!(yahoo(Some("mx.example.org")), Reason::BadReputation);
    }

    #[test]
    fn paired_phrases_need_both_parts_in_order() {
        assert!(phrase_in("your mailbox is completely full", "mailbox*full"));
        assert!(!phrase_in("full mailbox", "mailbox*full"));
        assert!(phrase_in(
            "mailbox for a has exceeded its size limit",
            "mailbox*exceeded*limit"
        ));
        assert!(!phrase_in(
            "limit exceeded for mailbox",
            "mailbox*exceeded*limit"
        ));
        // Parts far apart belong to different sentences.
        let far = format!("bad connection{}following recipient", " x".repeat(60));
        assert!(!phrase_in(&far, "bad*recipient"));
        assert!(phrase_in("550 bad recipient address", "bad*recipient"));
        assert_eq!(
            reason(None, "user is over their quota"),
            Reason::MailboxFull
        );
    }

    #[test]
    fn every_table_row_names_distinct_lowercase_phrases() {
        for (reason, phrases) in KEYWORDS {
            for p in *phrases {
                assert_eq!(*p, p.to_lowercase(), "{reason}: {p}");
                assert!(!p.trim().is_empty(), "{reason}");
            }
        }
    }
}
