//! Flattens one raw message into what the bounce parser reads: the human-readable text, the
//! `message/delivery-status` field groups, the ARF fields and the returned original's headers.
//!
//! MIME decoding (transfer encodings, charsets, nesting) is mail-parser's; the field groups are
//! split and unfolded here because mail-parser hands `message/delivery-status` over as opaque
//! bytes. No I/O; malformed input degrades to less information, never to a panic.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::Original;
use super::text;

/// One header field: name as written, value unfolded (continuation lines joined by a space).
pub(crate) type Field = (String, String);

#[derive(Debug, Default)]
pub(crate) struct Flat {
    pub subject: String,
    /// The bounce's own top-level header fields.
    pub headers: Vec<Field>,
    /// Plain-text parts of the bounce itself (not of the returned original), in order.
    texts: Vec<String>,
    /// Text recovered from HTML parts, used only when there is no plain text.
    html_texts: Vec<String>,
    /// Per-recipient field groups of a delivery-status part (the per-message group dropped).
    pub delivery_status: Option<Vec<Vec<Field>>>,
    /// The per-message `Reporting-MTA` of a delivery-status part (`dns; host`).
    pub reporting_mta: Option<String>,
    /// The per-message `Original-Envelope-Id` of a delivery-status part, as written (xtext).
    pub envelope_id: Option<String>,
    /// Fields of a `message/feedback-report` part.
    pub feedback: Option<Vec<Field>>,
    /// Header fields of the returned original message, when the bounce includes them.
    original_headers: Vec<Field>,
}

/// The longest value kept from the returned original's headers and the subject, in bytes: an
/// RFC 5322 line (§2.1.1). Longer values are cut.
pub(crate) const MAX_FIELD: usize = 998;

/// Markers after which non-MIME bounces quote the original message (lowercase, matched as
/// substrings of a line). Data, not code: add new MTAs' wording here.
const ORIGINAL_MARKERS: &[&str] = &[
    "below this line is a copy of the message",
    "this is a copy of the message, including all the headers",
    "this is a copy of the headers that were received",
    "original message follows",
    "----- original message -----",
    "--- original message ---",
    "original message headers",
    "original message:",
    "unsent message follows",
    "message header follows",
    "included is a copy of the message header",
    "the header of the original message",
    "headers of your message follow",
    "your message reads (in part)",
    "returned message follows",
    "the original message was:",
    "copy of the original message",
    "content-type: message/rfc822",
    "content-type: text/rfc822-headers",
    "--- message headers ---",
    // Lotus/HCL Notes.
    "------- returned message",
    // fml.
    "original mail as follows:",
    // m-FILTER.
    "-------original message",
    "-------original mail info",
];

pub(crate) fn flatten(raw: &[u8]) -> Option<Flat> {
    let message = MessageParser::default().parse(raw)?;
    let mut flat = Flat {
        // RFC 5322 §2.1.1: a line is at most 998 characters; a longer subject is runaway data.
        subject: text::cap(message.subject().unwrap_or_default().to_owned(), MAX_FIELD),
        headers: header_block(header_bytes(&message)),
        ..Flat::default()
    };
    if flat.headers.is_empty() {
        return None;
    }
    for part in &message.parts {
        let (ctype, subtype) = match part.content_type() {
            Some(ct) => (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or_default().to_ascii_lowercase(),
            ),
            None => ("text".to_owned(), "plain".to_owned()),
        };
        let mime = format!("{ctype}/{subtype}");
        match &part.body {
            PartType::Text(body) => match mime.as_str() {
                "text/rfc822-headers" | "message/rfc822-headers" => {
                    flat.set_original(header_block(body.as_bytes()));
                }
                "message/delivery-status" | "message/global-delivery-status" => {
                    flat.set_delivery_status(body.as_bytes());
                }
                "message/feedback-report" => flat.feedback = Some(fields(body.as_bytes())),
                _ => flat.texts.push(body.to_string()),
            },
            PartType::Html(body) => flat.html_texts.push(strip_html(body)),
            PartType::Binary(body) | PartType::InlineBinary(body) => match mime.as_str() {
                "message/delivery-status" | "message/global-delivery-status" => {
                    flat.set_delivery_status(body);
                }
                "message/feedback-report" => flat.feedback = Some(fields(body)),
                "text/rfc822-headers" | "message/rfc822-headers" | "message/rfc822" => {
                    flat.set_original(header_block(body));
                }
                _ => {}
            },
            PartType::Message(nested) => {
                flat.set_original(header_block(header_bytes(nested)));
            }
            PartType::Multipart(_) => {}
        }
    }
    // A damaged MIME structure (a boundary parameter that lost its folding whitespace) leaves
    // no readable part: read the raw body as text rather than nothing.
    if flat
        .texts
        .iter()
        .chain(&flat.html_texts)
        .all(|t| t.trim().is_empty())
        && flat.delivery_status.is_none()
        && flat.feedback.is_none()
    {
        let body = raw_body(raw);
        if !body.trim().is_empty() {
            flat.texts = vec![body];
        }
    }
    // RFC 3464 fields written into a plain-text part (a bounce forwarded as text, a MIME
    // structure lost on the way, a "Technical report:" section) are a delivery-status part all
    // the same: read them as one, and take them out of the human text.
    if flat.delivery_status.is_none() {
        for i in 0..flat.texts.len() {
            if let Some(range) = embedded_delivery_status(&flat.texts[i]) {
                let block = flat.texts[i][range.clone()].to_owned();
                flat.texts[i].replace_range(range, "\n");
                flat.set_delivery_status(block.as_bytes());
                if flat.delivery_status.is_some() {
                    break;
                }
            }
        }
    }
    // Non-MIME bounces quote the original inside their text: split it off so that its
    // addresses are not mistaken for failed recipients, and keep its headers for matching.
    for i in 0..flat.texts.len() {
        if let Some(cut) = original_start(&flat.texts[i]) {
            let quoted = flat.texts[i][cut..].to_owned();
            flat.texts[i].truncate(cut);
            flat.set_original(header_block(skip_to_headers(&quoted).as_bytes()));
        }
    }
    Some(flat)
}

/// Everything after the first blank line, lossily decoded.
fn raw_body(raw: &[u8]) -> String {
    let start = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .into_iter()
        .chain(raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
        .min()
        .unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[start..]).into_owned()
}

/// The header section of a (possibly nested) message: everything before the first blank line.
fn header_bytes<'a>(message: &'a Message<'_>) -> &'a [u8] {
    let raw: &[u8] = message.raw_message();
    let end = message.root_part().offset_body.min(raw.len() as u32) as usize;
    &raw[..end]
}

impl Flat {
    fn set_original(&mut self, headers: Vec<Field>) {
        if self.original_headers.is_empty() {
            self.original_headers = headers;
        }
    }

    fn set_delivery_status(&mut self, body: &[u8]) {
        let all: Vec<Vec<Field>> = split_groups(body)
            .into_iter()
            .flat_map(|group| split_recipients(header_block(group)))
            .collect();
        if self.reporting_mta.is_none() {
            self.reporting_mta = all
                .iter()
                .flatten()
                .find(|(k, _)| k.eq_ignore_ascii_case("Reporting-MTA"))
                .map(|(_, v)| v.trim().to_owned());
        }
        if self.envelope_id.is_none() {
            // Kept only when short enough to be one (RFC 3461 §4.4): decoded by the caller.
            self.envelope_id = all
                .iter()
                .flatten()
                .find(|(k, _)| k.eq_ignore_ascii_case("Original-Envelope-Id"))
                .map(|(_, v)| v.trim())
                .filter(|v| v.len() <= super::envelope::MAX_ENVID)
                .map(str::to_owned);
        }
        let groups: Vec<Vec<Field>> = all
            .into_iter()
            .filter(|g| {
                g.iter().any(|(k, _)| {
                    k.eq_ignore_ascii_case("Final-Recipient")
                        || k.eq_ignore_ascii_case("Original-Recipient")
                })
            })
            .collect();
        if !groups.is_empty() {
            self.delivery_status
                .get_or_insert_with(Vec::new)
                .extend(groups);
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn original_header(&self, name: &str) -> Option<&str> {
        self.original_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn original(&self) -> Original {
        let id = |v: &str| {
            let v = v.trim();
            let v = v.strip_prefix('<').unwrap_or(v);
            let v = v.split('>').next().unwrap_or(v);
            v.trim().to_owned()
        };
        let token = |v: &str| v.split_whitespace().next().unwrap_or("").to_owned();
        Original {
            message_id: self
                .original_header("Message-ID")
                .map(|v| text::cap(id(v), MAX_FIELD))
                .filter(|v| !v.is_empty()),
            token: self
                .original_header("X-Mailroom-Token")
                .map(|v| text::cap(token(v), MAX_FIELD))
                .filter(|v| !v.is_empty()),
            campaign: self
                .original_header("X-Mailroom-Campaign")
                .map(|v| text::cap(v.to_owned(), MAX_FIELD)),
            to: self.original_to().into_iter().next(),
            envelope_id: None,
            from: self.original_header("From").and_then(text::first_address),
        }
    }

    pub fn original_to(&self) -> Vec<String> {
        self.original_header("To")
            .map(|v| text::addresses(v).into_iter().map(|(_, a)| a).collect())
            .unwrap_or_default()
    }

    /// The text a human would read: plain parts, or de-tagged HTML when there is no plain part.
    pub fn human_text(&self) -> String {
        let parts = if self.texts.iter().any(|t| !t.trim().is_empty()) {
            &self.texts
        } else {
            &self.html_texts
        };
        parts.join("\n")
    }

    /// The lines of the human text that carry the error (for a one-recipient DSN whose
    /// Diagnostic-Code is missing).
    pub fn human_summary(&self) -> &str {
        self.texts
            .iter()
            .chain(&self.html_texts)
            .map(String::as_str)
            .find(|t| !t.trim().is_empty())
            .unwrap_or("")
    }

    pub fn first_text_line(&self) -> String {
        self.human_text()
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned()
    }

    /// Addresses that appear in a bounce but are not recipients: the bounce's own From/To
    /// (the daemon and our envelope sender) and the original's sender.
    pub fn excluded_addresses(&self) -> Vec<String> {
        let mut out = Vec::new();
        for name in [
            "From",
            "To",
            "Reply-To",
            "Return-Path",
            "Sender",
            "Delivered-To",
        ] {
            if let Some(v) = self.header(name) {
                out.extend(text::addresses(v).into_iter().map(|(_, a)| a));
            }
        }
        for name in ["From", "Return-Path", "Sender", "Reply-To", "Errors-To"] {
            if let Some(v) = self.original_header(name) {
                out.extend(text::addresses(v).into_iter().map(|(_, a)| a));
            }
        }
        // Our own To is the original recipient: never exclude it, even when an MTA also put
        // it into the bounce's headers.
        let to = self.original_to();
        out.retain(|a| !to.iter().any(|t| t.eq_ignore_ascii_case(a)));
        out
    }

    /// The addresses of the daemon that wrote the bounce (its `From`, `Sender`, `Return-Path`):
    /// never the failed recipient, even when a bounce goes back to the address that failed.
    pub fn daemon_addresses(&self) -> Vec<String> {
        ["From", "Sender", "Return-Path"]
            .iter()
            .filter_map(|name| self.header(name))
            .flat_map(|v| text::addresses(v).into_iter().map(|(_, a)| a))
            .collect()
    }

    /// `X-Failed-Recipients` (Exim, Gmail), split on commas.
    pub fn failed_recipients(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("X-Failed-Recipients"))
            .flat_map(|(_, v)| text::addresses(v).into_iter().map(|(_, a)| a))
            .collect()
    }

    pub fn sender_address(&self) -> Option<String> {
        self.header("From").and_then(text::first_address)
    }

    fn sender_is_daemon(&self) -> bool {
        self.header("From").is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            DAEMON_WORDS.iter().any(|w| v.contains(w))
        })
    }

    fn subject_is_bounce(&self) -> bool {
        let s = self.subject.to_lowercase();
        BOUNCE_SUBJECT_WORDS.iter().any(|w| s.contains(w))
    }

    /// RFC 3834 and the vendor headers that mark an automatic reply, and vacation wording in
    /// the subject; never when the message reads like a bounce.
    pub fn looks_like_auto_reply(&self) -> bool {
        if self.sender_is_daemon() || self.subject_is_bounce() {
            return false;
        }
        // System mail (cron, sudo's security notices) is not a reader's auto-reply.
        let from_system = self
            .header("From")
            .is_some_and(|v| v.to_ascii_lowercase().contains("root@"));
        let subject = self.subject.to_lowercase();
        if from_system || subject.contains("security information for") {
            return false;
        }
        let header_says = self.headers.iter().any(|(k, v)| {
            let k = k.to_ascii_lowercase();
            let v = v.trim().to_ascii_lowercase();
            match k.as_str() {
                // RFC 3834 and the IANA registry: replies, generated and notification mail.
                "auto-submitted" => ["auto-replied", "auto-generated", "auto-notified"]
                    .iter()
                    .any(|p| v.starts_with(p)),
                "x-autoreply" | "x-autorespond" | "x-autoresponder" | "x-mail-autoreply" => true,
                "precedence" => v == "auto_reply",
                "x-apple-action" => v.contains("vacation"),
                "x-auto-response-suppress" => false,
                _ => false,
            }
        });
        let subject_says = VACATION_SUBJECT_WORDS.iter().any(|w| subject.contains(w))
            || subject.starts_with("auto:");
        header_says || subject_says
    }

    /// A non-DSN message is read as a bounce only on strong evidence (a daemon sender, an empty
    /// return path, `X-Failed-Recipients`), or when both its subject and its text read like
    /// one: a reader's reply titled "error in your newsletter" must not bounce anyone it names.
    pub fn looks_like_bounce(&self) -> bool {
        if self.sender_is_daemon() || !self.failed_recipients().is_empty() {
            return true;
        }
        if self.header("Return-Path").is_some_and(|v| v.trim() == "<>") {
            return true;
        }
        // fml mailing-list servers answer from `list-admin@` with an X-MLServer header.
        if self.header("X-MLServer").is_some()
            && self.header("From").is_some_and(|v| v.contains("-admin@"))
        {
            return true;
        }
        let body = self.human_text().to_lowercase();
        // Apache James' notice: the error, then the original's envelope.
        if body.contains("error message below:") && body.contains("message details:") {
            return true;
        }
        self.subject_is_bounce() && BOUNCE_BODY_WORDS.iter().any(|w| body.contains(w))
    }
}

/// Local parts and display names of the senders of bounces.
const DAEMON_WORDS: &[&str] = &[
    "mailer-daemon",
    "mailer_daemon",
    "maildaemon",
    "mail-daemon",
    "postmaster",
    "mail delivery",
    "mailerdaemon",
    "<>",
    "mail administrator",
    "mail system",
    "post_master",
];

const BOUNCE_SUBJECT_WORDS: &[&str] = &[
    "undeliver",
    "undelivered",
    "delivery status",
    "delivery failure",
    "delivery failed",
    "delivery notification",
    "failure notice",
    "returned mail",
    "returned to sender",
    "mail delivery",
    "non-delivery",
    "nondelivery",
    "not delivered",
    "could not be delivered",
    "delivery problem",
    "mail system error",
    "rejected",
    "bounce",
    "unzustellbar",
    "failed",
    "failure",
    "warning: could not",
    "error",
    "returned",
];

const BOUNCE_BODY_WORDS: &[&str] = &[
    "could not be delivered",
    "couldn't be delivered",
    "was not delivered",
    "wasn't delivered",
    "undeliverable",
    "delivery failed",
    "delivery has failed",
    "permanent error",
    "permanent failure",
    "following address",
    "following recipient",
    "unable to deliver",
    "not able to deliver",
    "delivery to the following",
    "failed to deliver",
    "user unknown",
    "returned to you",
    // Lotus/HCL Notes: "------- Failure Reasons --------".
    "failure reasons",
    "trouble delivering your message",
    // m-FILTER (Japanese): "sending to the following address failed".
    "送信に失敗しました",
];

const VACATION_SUBJECT_WORDS: &[&str] = &[
    "auto reply",
    "auto-reply",
    "autoreply",
    "auto response",
    "auto-response",
    "autoresponse",
    "automatic reply",
    "automatic response",
    "out of office",
    "out of the office",
    "vacation",
    "abwesenheit",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "automatisch antwoord",
    "autosvar",
    "自動応答",
    "不在",
];

/// Splits a block of header-like text into fields until the first blank line (or the first line
/// that is neither a field nor a continuation).
pub(crate) fn header_block(bytes: &[u8]) -> Vec<Field> {
    let text = String::from_utf8_lossy(bytes);
    let mut out: Vec<Field> = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if out.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if is_field_name(name) => {
                out.push((name.to_owned(), value.trim().to_owned()));
            }
            // "From sender date" mbox separators may precede the fields of a quoted original.
            _ if out.is_empty() && line.starts_with("From ") => {}
            _ => break,
        }
    }
    out
}

/// An RFC 5322 field name: printable ASCII but `:`, at least one (shared with `doctor
/// --inspect`, which tells a message from any other file by its first field).
pub(crate) fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Every field of every group (for ARF, whose one group is what matters).
fn fields(bytes: &[u8]) -> Vec<Field> {
    split_groups(bytes)
        .into_iter()
        .flat_map(header_block)
        .collect()
}

/// Splits a field group where a recipient field repeats: some MTAs write every per-recipient
/// group without the blank line RFC 3464 puts between them, so a second `Final-Recipient` (or
/// `Original-Recipient`) is where the next recipient's group starts. The new group starts at the
/// earlier of the two recipient fields when they stand together.
fn split_recipients(fields: Vec<Field>) -> Vec<Vec<Field>> {
    let is_recipient = |name: &str| {
        name.eq_ignore_ascii_case("Final-Recipient")
            || name.eq_ignore_ascii_case("Original-Recipient")
    };
    let mut groups: Vec<Vec<Field>> = vec![Vec::new()];
    for field in fields {
        let current = groups.last_mut().expect("groups starts with one group");
        let repeats = is_recipient(&field.0)
            && current
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(&field.0));
        if repeats {
            // The other recipient field just before this one belongs to the new group too.
            let carried = match current.last() {
                Some((name, _)) if is_recipient(name) && !name.eq_ignore_ascii_case(&field.0) => {
                    current.pop()
                }
                _ => None,
            };
            groups.push(carried.into_iter().collect());
        }
        groups
            .last_mut()
            .expect("groups is never empty")
            .push(field);
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// The byte range of RFC 3464 fields written into plain text: from the first line that starts
/// with `Reporting-MTA:`, `Final-Recipient:` or `Original-Recipient:`, every following
/// blank-line separated group whose first line is a delivery-status field. `None` unless the
/// range names a recipient.
fn embedded_delivery_status(text: &str) -> Option<std::ops::Range<usize>> {
    const OPENING: &[&str] = &["reporting-mta:", "final-recipient:", "original-recipient:"];
    const FIELDS: &[&str] = &[
        "reporting-mta",
        "final-recipient",
        "original-recipient",
        "action",
        "status",
        "diagnostic-code",
        "remote-mta",
        "arrival-date",
        "received-from-mta",
        "last-attempt-date",
        "will-retry-until",
        "original-envelope-id",
        "dsn-gateway",
    ];
    let starts_with_any = |line: &str, names: &[&str]| {
        let head = line.get(..24).unwrap_or(line).to_ascii_lowercase();
        names.iter().any(|n| head.starts_with(n))
    };
    let is_dsn_field = |line: &str| {
        line.split_once(':').is_some_and(|(name, _)| {
            let name = name.to_ascii_lowercase();
            FIELDS.contains(&name.as_str()) || (name.starts_with("x-") && !name.contains(' '))
        })
    };
    let mut offset = 0;
    let mut start = None;
    let mut end = text.len();
    let mut group_open = false;
    let mut names_recipient = false;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        match start {
            None if starts_with_any(bare, OPENING) => {
                start = Some(offset);
                group_open = true;
            }
            None => {}
            Some(_) if bare.is_empty() => group_open = false,
            Some(_) if !group_open => {
                if !is_dsn_field(bare) {
                    end = offset;
                    break;
                }
                group_open = true;
            }
            Some(_) => {}
        }
        if start.is_some() && starts_with_any(bare, &OPENING[1..]) {
            names_recipient = true;
        }
        offset += line.len();
    }
    let start = start?;
    names_recipient.then_some(start..end)
}

/// Blank-line separated groups (RFC 3464: per-message fields, then one group per recipient).
fn split_groups(bytes: &[u8]) -> Vec<&[u8]> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    let mut in_group = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            let line = &bytes[line_start..i];
            let blank = line.iter().all(|c| c.is_ascii_whitespace());
            if blank {
                if in_group {
                    groups.push(&bytes[start..line_start]);
                    in_group = false;
                }
            } else if !in_group {
                start = line_start;
                in_group = true;
            }
            line_start = i + 1;
        }
    }
    if line_start < bytes.len() && !bytes[line_start..].iter().all(|c| c.is_ascii_whitespace()) {
        if !in_group {
            start = line_start;
        }
        in_group = true;
    }
    if in_group {
        groups.push(&bytes[start..]);
    }
    groups
}

/// Byte offset of the line where a non-MIME bounce starts quoting the original message.
fn original_start(text: &str) -> Option<usize> {
    let mut offset = 0;
    let mut header_run = 0;
    let mut run_start = 0;
    for line in text.split_inclusive('\n') {
        let lower = line.to_lowercase();
        if ORIGINAL_MARKERS.iter().any(|m| lower.contains(m)) {
            return Some(offset);
        }
        // Three header fields in a row at column 0, one of them a trace field, is a quoted
        // header block even without a marker line.
        let trimmed = line.trim_end();
        let is_field = trimmed
            .split_once(':')
            .is_some_and(|(n, _)| is_field_name(n) && !n.contains(' ') && n.len() < 40);
        if is_field || (header_run > 0 && line.starts_with([' ', '\t'])) {
            if header_run == 0 {
                run_start = offset;
            }
            if is_field {
                header_run += 1;
            }
            let name = lower.split(':').next().unwrap_or("");
            if header_run >= 3 && matches!(name, "received" | "return-path" | "message-id") {
                return Some(run_start);
            }
        } else {
            header_run = 0;
        }
        offset += line.len();
    }
    None
}

/// Skips the marker line and anything up to the quoted header block.
fn skip_to_headers(quoted: &str) -> String {
    let mut lines = quoted.lines().peekable();
    let mut out = String::new();
    let mut started = false;
    while let Some(line) = lines.next() {
        if !started {
            let is_field = line
                .split_once(':')
                .is_some_and(|(n, _)| is_field_name(n) && !n.contains(' '));
            let lower = line.to_lowercase();
            if !is_field || ORIGINAL_MARKERS.iter().any(|m| lower.contains(m)) {
                continue;
            }
            started = true;
        }
        if started && line.trim().is_empty() {
            break;
        }
        out.push_str(line);
        out.push('\n');
        let _ = lines.peek();
    }
    out
}

/// Crude HTML to text: drops tags, `<style>`/`<script>` content and decodes a few entities.
fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let after = &rest[lt..];
        let lower: String = after
            .chars()
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        let skip_to = if lower.starts_with("<style") {
            after.to_ascii_lowercase().find("</style>").map(|i| i + 8)
        } else if lower.starts_with("<script") {
            after.to_ascii_lowercase().find("</script>").map(|i| i + 9)
        } else {
            after.find('>').map(|i| i + 1)
        };
        match skip_to {
            Some(n) => {
                let tag = &after[..n].to_ascii_lowercase();
                if tag.starts_with("<br")
                    || tag.starts_with("<p")
                    || tag.starts_with("<tr")
                    || tag.starts_with("<div")
                    || tag.starts_with("</td")
                {
                    out.push('\n');
                }
                rest = &after[n..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_block_unfolds_and_stops_at_blank_line() {
        let f = header_block(b"A: 1\r\nDiagnostic-Code: smtp; 550\r\n  more text\r\n\r\nB: 2\r\n");
        assert_eq!(
            f,
            vec![
                ("A".to_owned(), "1".to_owned()),
                (
                    "Diagnostic-Code".to_owned(),
                    "smtp; 550 more text".to_owned()
                )
            ]
        );
    }

    #[test]
    fn groups_split_on_blank_lines_with_crlf_and_trailing_text() {
        let g = split_groups(b"Reporting-MTA: x\r\n\r\n\r\nFinal-Recipient: a\r\nAction: failed");
        assert_eq!(g.len(), 2);
        assert!(g[1].starts_with(b"Final-Recipient"));
    }

    #[test]
    fn original_start_finds_markers_and_bare_header_blocks() {
        let t = "error text\n--- Below this line is a copy of the message.\n\nReturn-Path: <a@b>\n";
        assert_eq!(original_start(t), Some(11));
        let t = "text\nReturn-Path: <a@b>\nReceived: from x\n  by y\nMessage-ID: <1@b>\n";
        assert_eq!(original_start(t), Some(5));
        assert_eq!(original_start("Status: 5.1.1\nAction: failed\n"), None);
    }

    #[test]
    fn recipient_groups_without_blank_lines_are_split_where_a_recipient_field_repeats() {
        let f = |name: &str, v: &str| (name.to_owned(), v.to_owned());
        let groups = split_recipients(vec![
            f("Reporting-MTA", "dns; mx"),
            f("Final-Recipient", "rfc822; a@example.org"),
            f("Status", "5.2.2"),
            f("Original-Recipient", "rfc822; b@example.org"),
            f("Final-Recipient", "rfc822; b@example.org"),
            f("Status", "5.1.1"),
        ]);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].len(), 3);
        assert_eq!(groups[1][0].0, "Original-Recipient");
        assert_eq!(groups[1][2], f("Status", "5.1.1"));
    }

    #[test]
    fn delivery_status_fields_in_plain_text_are_found_and_bounded() {
        let t = "Your message could not be delivered.\n\nReporting-MTA: dns; mx\n\n\
                 Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n\n\
                 Return-Path: <s@example.com>\nSubject: hi\n";
        let range = embedded_delivery_status(t).unwrap();
        assert!(t[range.clone()].starts_with("Reporting-MTA"));
        assert!(t[range].trim_end().ends_with("Status: 5.1.1"));
        // Fields that name no recipient are not a delivery-status block.
        assert_eq!(
            embedded_delivery_status("Reporting-MTA: dns; mx\nAction: x\n"),
            None
        );
        assert_eq!(embedded_delivery_status("no fields at all"), None);
    }

    #[test]
    fn html_is_reduced_to_text() {
        let t = strip_html("<style>p{}</style><p>Address &lt;a@b.example&gt;</p><br>done");
        assert!(t.contains("Address <a@b.example>"), "{t}");
        assert!(!t.contains("p{}"));
    }
}
