//! What the shell must do after feeding the session one line: the reply to write (after an
//! optional scripted delay), what happens to the connection next, and an accepted message to
//! deliver. Plain data built by `session`; the shell in `sandbox.rs` carries it out.

use std::fmt::Write as _;
use std::time::Duration;

use super::script::Flood;

/// What the shell must do after feeding a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep reading.
    Continue,
    /// Write the reply, then run the TLS handshake on the raw stream (anything the client already
    /// pipelined after STARTTLS is discarded).
    StartTls,
    /// Write the reply, then close the connection.
    Close,
    /// Close the connection without writing anything (the reply, if any, is not sent).
    Drop,
    /// Write a reply that never ends (scripted), until the client hangs up.
    Flood(Flood),
    /// Write nothing more: read and ignore the client until it hangs up (scripted silence;
    /// replies already due are still written).
    Hang,
}

/// One accepted message; the shell writes it to the Maildir before sending the 250.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Queue id given in the 250 reply (`SBX000001`).
    pub id: String,
    /// Envelope sender; empty for the null sender `<>`.
    pub mail_from: String,
    /// Accepted recipients, in RCPT order.
    pub rcpts: Vec<String>,
    /// The message exactly as received, dot-unstuffed.
    pub data: Vec<u8>,
    /// Reports to write to the bounce Maildir after accepting.
    pub feedback: Vec<Feedback>,
    /// RFC 3461 `RET` and `ENVID` of MAIL (`[session] dsn`), as sent.
    pub ret: Option<String>,
    pub envid: Option<String>,
    /// RFC 3461 `NOTIFY` and `ORCPT` of each recipient, in RCPT order.
    pub rcpt_dsn: Vec<super::dsn::RcptParams>,
}

impl Accepted {
    /// The Maildir file: `Return-Path` and one `Delivered-To` per recipient, as a delivery agent
    /// adds them, then the message byte for byte.
    pub fn maildir_bytes(&self) -> Vec<u8> {
        let mut out = format!("Return-Path: <{}>\r\n", self.mail_from);
        for rcpt in &self.rcpts {
            let _ = write!(out, "Delivered-To: {rcpt}\r\n");
        }
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.data);
        bytes
    }
}

/// A scripted report about one recipient of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// The recipient the report is about.
    pub rcpt: String,
    /// Which report to write.
    pub kind: FeedbackReport,
    /// The client's `ENVID` and this recipient's `ORCPT`, echoed by DSNs.
    pub envid: Option<String>,
    pub orcpt: Option<String>,
}

/// The kinds of report the sandbox writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackReport {
    /// RFC 3464 delivery status notification, `Action: failed`.
    Dsn { status: String, diagnostic: String },
    /// RFC 5965 feedback report.
    Arf { feedback_type: String },
    /// RFC 3464 success notification (`Action: delivered`), for a recipient whose RCPT asked
    /// `NOTIFY=SUCCESS` (with `[session] dsn`).
    Delivered,
}

/// The result of one input line.
#[derive(Debug, Clone)]
pub struct Response {
    /// Wait this long before replying (scripted slow replies).
    pub delay: Duration,
    /// The complete reply text with CRLFs; empty when nothing is to be written (message lines).
    pub reply: String,
    pub after: After,
    pub accepted: Option<Accepted>,
}

impl Response {
    pub(super) fn none() -> Response {
        Response {
            delay: Duration::ZERO,
            reply: String::new(),
            after: After::Continue,
            accepted: None,
        }
    }

    pub(super) fn reply(code: u16, enhanced: &str, text: &str) -> Response {
        Response {
            reply: format!("{code} {enhanced} {text}\r\n"),
            ..Response::none()
        }
    }

    pub(super) fn then(mut self, after: After) -> Response {
        self.after = after;
        self
    }

    pub(super) fn delayed(mut self, delay: Duration) -> Response {
        self.delay = delay;
        self
    }

    /// The reply code of the last reply line (0 when there is no reply).
    pub fn code(&self) -> u16 {
        self.reply
            .trim_end()
            .rsplit("\r\n")
            .next()
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}
