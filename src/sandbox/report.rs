//! Builds the feedback messages the sandbox "sends back" for scripted recipients: RFC 3464
//! delivery status notifications and RFC 5965 (ARF) abuse reports, as raw RFC 5322 bytes.
//! Pure functions of their inputs; writing them to a Maildir is the server's job.

use std::fmt::Write as _;

/// What the original message looked like, as far as a report needs it.
pub struct Original<'a> {
    /// Envelope sender (MAIL FROM); the report is addressed to it.
    pub mail_from: &'a str,
    /// The recipient the report is about.
    pub rcpt_to: &'a str,
    /// The full message as received.
    pub message: &'a [u8],
    /// Our host name, e.g. `sandbox.localhost`.
    pub reporting_host: &'a str,
    /// RFC 5322 date of arrival.
    pub arrival_date: &'a str,
    /// Distinguishes boundaries and Message-IDs of reports written in the same second.
    pub unique: &'a str,
    /// Client IP address, for ARF `Source-IP`.
    pub source_ip: &'a str,
}

/// The header block of `message` (up to, not including, the blank line), with CRLF line ends.
pub fn header_block(message: &[u8]) -> Vec<u8> {
    let end = find(message, b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| find(message, b"\n\n").map(|i| i + 1))
        .unwrap_or(message.len());
    let mut out = Vec::with_capacity(end + 2);
    // Normalise bare LFs so the report itself stays valid CRLF text.
    for (i, &b) in message[..end].iter().enumerate() {
        if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    if !out.ends_with(b"\r\n") && !out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of the first `name:` header of `message` (unfolded), if any.
pub fn header_value(message: &[u8], name: &str) -> Option<String> {
    let headers = String::from_utf8_lossy(&header_block(message)).into_owned();
    let mut found: Option<String> = None;
    for line in headers.split("\r\n") {
        if let Some(value) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((key, value)) = line.split_once(':')
            && key.eq_ignore_ascii_case(name)
        {
            found = Some(value.trim().to_owned());
        }
    }
    found
}

fn envelope_to(mail_from: &str) -> String {
    if mail_from.is_empty() {
        // A null sender gets no bounce in real life (RFC 5321 §6.1); the sandbox still writes the
        // report so tests can see it, addressed to the postmaster.
        "postmaster@localhost".to_owned()
    } else {
        mail_from.to_owned()
    }
}

fn common_headers(
    out: &mut String,
    o: &Original<'_>,
    from: &str,
    subject: &str,
    boundary: &str,
    report_type: &str,
) {
    let to = envelope_to(o.mail_from);
    let _ = write!(
        out,
        "Return-Path: <>\r\n\
         Delivered-To: {to}\r\n\
         From: {from}\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{unique}@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type={report_type};\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n",
        date = o.arrival_date,
        unique = o.unique,
        host = o.reporting_host,
    );
}

/// The RFC 3461 parameters the client sent, which a DSN echoes (`Original-Envelope-Id`, and the
/// `ORCPT` as `Original-Recipient`); both as the client wrote them (xtext).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub envid: Option<&'a str>,
    pub orcpt: Option<&'a str>,
}

/// An RFC 3464 non-delivery report (`Action: failed`) for `o.rcpt_to`.
pub fn dsn(o: &Original<'_>, status: &str, diagnostic: &str) -> Vec<u8> {
    failed(o, status, diagnostic, Envelope::default())
}

/// [`dsn`], echoing the client's DSN parameters.
pub fn failed(o: &Original<'_>, status: &str, diagnostic: &str, envelope: Envelope<'_>) -> Vec<u8> {
    let original_id = header_value(o.message, "Message-ID").unwrap_or_default();
    delivery_status(
        o,
        envelope,
        "Undelivered Mail Returned to Sender",
        &format!(
            "Your message {original_id} could not be delivered to <{rcpt}>.\r\n\
             The remote server said: {diagnostic}",
            rcpt = o.rcpt_to
        ),
        &format!(
            "Action: failed\r\nStatus: {status}\r\nRemote-MTA: dns; mx.{domain}\r\n\
             Diagnostic-Code: {diagnostic}\r\n",
            domain = o.rcpt_to.rsplit('@').next().unwrap_or("invalid"),
        ),
        "Undelivered Message Headers",
    )
}

/// An RFC 3464 success report (`Action: delivered`, `Status: 2.0.0`) for `o.rcpt_to`, as an
/// MTA sends it after delivering to the mailbox when the client asked with `NOTIFY=SUCCESS`.
pub fn delivered(o: &Original<'_>, envelope: Envelope<'_>) -> Vec<u8> {
    let original_id = header_value(o.message, "Message-ID").unwrap_or_default();
    delivery_status(
        o,
        envelope,
        "Successful Mail Delivery Report",
        &format!(
            "Your message {original_id} was successfully delivered to <{rcpt}>.",
            rcpt = o.rcpt_to
        ),
        "Action: delivered\r\nStatus: 2.0.0\r\nDiagnostic-Code: smtp; 250 2.0.0 delivered to mailbox\r\n",
        "Message Headers",
    )
}

fn delivery_status(
    o: &Original<'_>,
    envelope: Envelope<'_>,
    subject: &str,
    human: &str,
    fields: &str,
    returned: &str,
) -> Vec<u8> {
    let boundary = format!("=_dsn_{}", o.unique);
    let mut out = String::new();
    common_headers(
        &mut out,
        o,
        &format!("Mail Delivery System <MAILER-DAEMON@{}>", o.reporting_host),
        subject,
        &boundary,
        "delivery-status",
    );
    let envid = envelope
        .envid
        .map(|id| format!("Original-Envelope-Id: {id}\r\n"))
        .unwrap_or_default();
    let orcpt = match envelope.orcpt {
        Some(orcpt) => orcpt.replacen(';', "; ", 1),
        None => format!("rfc822; {}", o.rcpt_to),
    };
    let _ = write!(
        out,
        "--{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         Content-Description: Notification\r\n\
         \r\n\
         This is the mail system at host {host}.\r\n\
         \r\n\
         {human}\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         Content-Description: Delivery report\r\n\
         \r\n\
         Reporting-MTA: dns; {host}\r\n\
         {envid}\
         Arrival-Date: {date}\r\n\
         \r\n\
         Final-Recipient: rfc822; {rcpt}\r\n\
         Original-Recipient: {orcpt}\r\n\
         {fields}\
         Last-Attempt-Date: {date}\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         Content-Description: {returned}\r\n\
         \r\n",
        host = o.reporting_host,
        rcpt = o.rcpt_to,
        date = o.arrival_date,
    );
    finish(out, o.message, &boundary)
}

/// An RFC 5965 feedback report of `feedback_type` (usually `abuse`) about `o.rcpt_to`.
pub fn arf(o: &Original<'_>, feedback_type: &str) -> Vec<u8> {
    let boundary = format!("=_arf_{}", o.unique);
    let subject = header_value(o.message, "Subject").unwrap_or_default();
    let mut out = String::new();
    common_headers(
        &mut out,
        o,
        &format!("Feedback Loop <fbl@{}>", o.reporting_host),
        &format!("FW: {subject}"),
        &boundary,
        "feedback-report",
    );
    let _ = write!(
        out,
        "--{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is an email abuse report for a message received from IP {ip} on {date}.\r\n\
         The recipient <{rcpt}> marked it as {feedback_type}.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: message/feedback-report\r\n\
         \r\n\
         Feedback-Type: {feedback_type}\r\n\
         User-Agent: mailroom-sandbox/{version}\r\n\
         Version: 1\r\n\
         Original-Mail-From: <{from}>\r\n\
         Original-Rcpt-To: <{rcpt}>\r\n\
         Arrival-Date: {date}\r\n\
         Reporting-MTA: dns; {host}\r\n\
         Source-IP: {ip}\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n",
        ip = o.source_ip,
        date = o.arrival_date,
        rcpt = o.rcpt_to,
        from = o.mail_from,
        host = o.reporting_host,
        version = env!("CARGO_PKG_VERSION"),
    );
    finish(out, o.message, &boundary)
}

fn finish(head: String, message: &[u8], boundary: &str) -> Vec<u8> {
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&header_block(message));
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    const MESSAGE: &[u8] = b"From: News <news@example.com>\r\nTo: a@example.org\r\nSubject: Hello\r\n\tthere\r\nMessage-ID: <m1@example.com>\r\nX-Mailroom-Token: abc123\r\n\r\nBody line\r\n";

    fn original() -> Original<'static> {
        Original {
            mail_from: "bounces+abc123@example.com",
            rcpt_to: "a@example.org",
            message: MESSAGE,
            reporting_host: "sandbox.localhost",
            arrival_date: "Sat, 28 Nov 2026 20:00:00 +0000",
            unique: "Q1",
            source_ip: "127.0.0.1",
        }
    }

    #[test]
    fn header_value_unfolds() {
        assert_eq!(header_value(MESSAGE, "subject").unwrap(), "Hello there");
        assert_eq!(header_value(MESSAGE, "X-Missing"), None);
    }

    #[test]
    fn dsn_is_a_delivery_status_report_with_the_original_headers() {
        let bytes = dsn(&original(), "5.1.1", "smtp; 550 5.1.1 no such user");
        let msg = MessageParser::default().parse(&bytes).unwrap();
        let ct = msg.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(
            msg.to().unwrap().first().unwrap().address(),
            Some("bounces+abc123@example.com")
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Final-Recipient: rfc822; a@example.org\r\n"));
        assert!(text.contains("Status: 5.1.1\r\n"));
        assert!(text.contains("X-Mailroom-Token: abc123\r\n"));
        assert_eq!(
            msg.parts.len(),
            4,
            "root + text + delivery-status + headers"
        );
    }

    #[test]
    fn reports_echo_the_envelope_id_and_original_recipient() {
        let envelope = Envelope {
            envid: Some("abc123"),
            orcpt: Some("rfc822;a+2Bx@example.org"),
        };
        let text = String::from_utf8(delivered(&original(), envelope)).unwrap();
        assert!(text.contains("Original-Envelope-Id: abc123\r\n"), "{text}");
        assert!(text.contains("Original-Recipient: rfc822; a+2Bx@example.org\r\n"));
        assert!(text.contains("Action: delivered\r\nStatus: 2.0.0\r\n"));
        let reports = crate::bounce::parse(text.as_bytes());
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].kind, crate::model::FeedbackKind::Delivered);
        assert_eq!(reports[0].original.envelope_id.as_deref(), Some("abc123"));
        assert_eq!(
            reports[0].original_recipient.as_deref(),
            Some("a+x@example.org")
        );
        let failure =
            String::from_utf8(failed(&original(), "5.1.1", "smtp; 550 5.1.1 no", envelope))
                .unwrap();
        assert!(failure.contains("Action: failed\r\nStatus: 5.1.1\r\n"));
        assert!(failure.contains("Original-Envelope-Id: abc123\r\n"));
    }

    #[test]
    fn arf_is_a_feedback_report() {
        let bytes = arf(&original(), "abuse");
        let msg = MessageParser::default().parse(&bytes).unwrap();
        let ct = msg.content_type().unwrap();
        assert_eq!(ct.attribute("report-type"), Some("feedback-report"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Feedback-Type: abuse\r\n"));
        assert!(text.contains("Original-Rcpt-To: <a@example.org>\r\n"));
        assert!(text.contains("Message-ID: <m1@example.com>\r\n"));
    }
}
