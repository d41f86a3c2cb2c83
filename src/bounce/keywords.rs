//! The phrase tables of the bounce classifier: what the MTAs and mailbox providers that sisimai's
//! published rules cover write for each reason, re-expressed as our own data, and the labels one
//! MTA prints for one cause. Data and the matcher over it; no decisions (those are in
//! `classify`).

use super::reason::Reason;

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
pub(crate) fn gmail_state(lower: &str) -> Option<Reason> {
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

pub(crate) fn mta_label(lower: &str) -> Option<Reason> {
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
            // Amazon SES: the relay sends only for verified identities; for others it refuses
            // to relay.
            "email address is not verified",
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
            // "Message content rejected, UBE" (unsolicited bulk e-mail); "ube" alone is inside
            // words ("tube").
            ", ube",
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
    // What does not exist is the domain, not the user: ahead of the generic "does not exist".
    (
        Reason::HostUnknown,
        &[
            "domain does not exist",
            "domain doesn't exist",
            "no such domain",
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
            // The address refused with no cause given; at RCPT that is an unknown recipient.
            "recipient address rejected.",
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
            // Exim's pipe and file transports: the local system refused the delivery.
            "local delivery failed",
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
            "header size",
            // "Improper use of 8-bit data in message header" (Sendmail, Exchange); a bare
            // "8bit" or "encoding" is as likely a quoted Content-Transfer-Encoding field.
            "improper use of 8-bit data",
            "media error",
            "invalid mime",
            "mime error",
            "malformed mime",
            "content error",
            "illegal character",
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
    let pairs = Pairs::of(lower);
    KEYWORDS
        .iter()
        .find(|(_, phrases)| {
            phrases
                .iter()
                .any(|p| pairs.may_hold(p) && phrase_in(lower, p))
        })
        .map(|(reason, _)| *reason)
}

/// The byte pairs a text holds, as a 65,536-bit set. A phrase can occur in the text only if
/// each of its byte pairs does, which rules most of the table's thousand phrases out in a few
/// lookups: cheaper than preparing a substring search for each (the tables are read for every
/// report, so this is most of the classifier's time).
struct Pairs(Box<[u64; 1024]>);

impl Pairs {
    fn of(text: &str) -> Pairs {
        let mut bits = Box::new([0u64; 1024]);
        for w in text.as_bytes().windows(2) {
            let i = usize::from(w[0]) << 8 | usize::from(w[1]);
            bits[i >> 6] |= 1 << (i & 63);
        }
        Pairs(bits)
    }

    fn has(&self, a: u8, b: u8) -> bool {
        let i = usize::from(a) << 8 | usize::from(b);
        self.0[i >> 6] & (1 << (i & 63)) != 0
    }

    /// False when `phrase` (or a part of an `a*b` phrase) cannot occur in the text.
    fn may_hold(&self, phrase: &str) -> bool {
        phrase
            .split('*')
            .all(|part| part.as_bytes().windows(2).all(|w| self.has(w[0], w[1])))
    }
}

/// Whether any row of `reason` has a phrase in `lower`.
pub fn names(lower: &str, reason: Reason) -> bool {
    let pairs = Pairs::of(lower);
    KEYWORDS
        .iter()
        .filter(|(r, _)| *r == reason)
        .any(|(_, phrases)| {
            phrases
                .iter()
                .any(|p| pairs.may_hold(p) && phrase_in(lower, p))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

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
            match_keywords("user is over their quota"),
            Some(Reason::MailboxFull)
        );
    }

    #[test]
    fn the_pair_filter_never_rules_out_a_phrase_that_occurs() {
        let text = "550 5.2.2 <a@b.example>: mailbox is completely full (quota)";
        let pairs = Pairs::of(text);
        for (_, phrases) in KEYWORDS {
            for p in *phrases {
                if phrase_in(text, p) {
                    assert!(pairs.may_hold(p), "{p}");
                }
            }
        }
        assert!(pairs.may_hold("mailbox*full"));
        assert!(!pairs.may_hold("relay access denied"));
        assert_eq!(match_keywords(text), Some(Reason::MailboxFull));
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
