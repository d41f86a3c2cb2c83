//! The sandbox script: which reply each recipient (or sender) gets and which session-level faults
//! to inject. Parses and validates TOML into plain data and matches addresses; performs no I/O
//! and keeps no per-connection state (greylisting counters, the freeze and what the sandbox saw
//! live with the server). Every bad value is an error that names the key and says how to fix it.
//!
//! Format (documented for users in docs/sandbox.md):
//!
//! ```toml
//! [session]
//! starttls = false                 # do not offer STARTTLS
//! pipelining = false               # do not advertise PIPELINING (RFC 2920)
//! dsn = true                       # advertise DSN (RFC 3461); report successes when asked
//! auth = "fail"                    # every AUTH gets 535 5.7.8
//! tls_handshake = "abort"          # close the connection in the middle of the TLS handshake
//! greeting = "421 4.3.2 closing"   # replaces the 220 greeting (421 closes the connection)
//! disconnect_after_messages = 3    # 421 at the next MAIL after this many messages
//! disconnect_at = "auth"           # 421 (or disconnect_reply) at this stage of every session
//! delay_ms = { message = 5000 }    # slow replies per stage
//! inject = { starttls = "250 x\r\n" }  # raw bytes written right after the stage's reply
//! inject_sessions = 1              # ...only in the first N sessions (default: every session)
//! flood_at = "mail"                # answer this stage with a reply that never ends
//! flood = "line"                   # "line": one line without an end; "lines": endless lines
//! freeze_after_messages = 60       # after 60 messages (all sessions), no reply after the "."
//!                                  # of any later one until `Sandbox::thaw`
//! die_after_messages = 20          # after 20 messages (all sessions) the relay is dead: every
//!                                  # later MAIL and every new connection is closed, unanswered
//!
//! [[rule]]                         # first matching rule wins; no match = accept
//! recipient = "*@example.org"      # exact address, `*@domain`, or a glob with * and ?
//! action = "reject"                # accept reject greylist disconnect drop hang bounce complain
//! reply = "550 5.1.1 no such user"
//! at = "rcpt"                      # rcpt | data | message (reject, disconnect and hang)
//!
//! [[rule]]
//! recipient = "odd-*@*"
//! action = "accept"                # stored, and then...
//! raw_reply = "354 go ahead\r\n"   # ...these bytes instead of the 250 after the final "."
//! inject = "250 2.0.0 stray\r\n"   # ...and these right after it
//!
//! [[rule]]
//! sender = "bad-*@*"               # a sender rule: decides the reply to MAIL
//! action = "reject"                # reject, disconnect or hang
//! reply = "553 5.7.1 sender not owned by user"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A script that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // Not a `#[source]`: the message already carries the parser's, and a chain printed with
    // `{:#}` would show it twice.
    #[error(
        "sandbox script is not valid TOML: {0}\nFix the script at that position; every key is in docs/sandbox.md."
    )]
    Syntax(toml::de::Error),
    #[error("sandbox script: {what}\n\n{fix}")]
    Invalid { what: String, fix: String },
}

impl From<toml::de::Error> for Error {
    fn from(e: toml::de::Error) -> Self {
        Error::Syntax(e)
    }
}

fn invalid(what: impl Into<String>, fix: impl Into<String>) -> Error {
    Error::Invalid {
        what: what.into(),
        fix: fix.into(),
    }
}

/// A stage of the SMTP dialogue at which a rule or a delay applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Greeting,
    Ehlo,
    Starttls,
    Auth,
    Mail,
    Rcpt,
    /// The reply to the DATA command itself (before the message is sent).
    Data,
    /// The reply after the final "." of the message.
    Message,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Greeting => "greeting",
            Stage::Ehlo => "ehlo",
            Stage::Starttls => "starttls",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Message => "message",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One SMTP reply: a code, an enhanced status code (RFC 3463) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// RFC 5321 reply code, 200..=599.
    pub code: u16,
    /// `class.subject.detail`, its class equal to the code's first digit.
    pub enhanced: String,
    /// One line, no CR or LF.
    pub text: String,
}

impl Reply {
    /// A reply from its parts (not validated: scripts go through `parse`).
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: enhanced.to_owned(),
            text: text.into(),
        }
    }

    /// Parses `"550 5.1.1 text"`; the enhanced code's class must agree with the reply code.
    pub fn parse(s: &str) -> Result<Reply, String> {
        let mut parts = s.trim().splitn(3, ' ');
        let code = parts.next().unwrap_or_default();
        let code: u16 = code
            .parse()
            .ok()
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| format!("`{code}` is not a three-digit SMTP reply code"))?;
        let enhanced = parts.next().unwrap_or_default();
        if !enhanced_code_ok(enhanced) {
            return Err(format!(
                "`{enhanced}` is not an enhanced status code like 5.1.1"
            ));
        }
        if !enhanced.starts_with(&(code / 100).to_string()) {
            return Err(format!(
                "enhanced code {enhanced} does not match reply code {code} (class {})",
                code / 100
            ));
        }
        let text = parts.next().unwrap_or("").trim();
        if text.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err("reply text must be one line".to_owned());
        }
        Ok(Reply {
            code,
            enhanced: enhanced.to_owned(),
            text: if text.is_empty() {
                "scripted reply".to_owned()
            } else {
                text.to_owned()
            },
        })
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// What happens to a recipient matched by a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// 250 everywhere and stored; `raw_reply` replaces the 250 after the final "." and `inject`
    /// follows it (a relay whose replies do not fit the commands).
    Accept {
        raw_reply: Option<String>,
        inject: Option<String>,
    },
    /// Reply `reply` at `at` (rcpt, data or message).
    Reject { at: Stage, reply: Reply },
    /// `reply` (450 4.2.0 by default, as postgrey) for the first `attempts` RCPTs of this address, then accept.
    Greylist { attempts: u32, reply: Reply },
    /// Reply `reply` (421 4.3.2 by default) at `at`, then close the connection.
    Disconnect { at: Stage, reply: Reply },
    /// Read the whole message, then close the connection without replying.
    Drop,
    /// No reply at `at`: the connection stays open and silent until the client hangs up (a
    /// relay that hangs mid-transaction; the client's timeout must fire).
    Hang { at: Stage },
    /// Accept, then write an RFC 3464 DSN to the bounce Maildir.
    Bounce { status: String, diagnostic: String },
    /// Accept, then write an RFC 5965 ARF report to the bounce Maildir.
    Complain { feedback_type: String },
}

/// Whose address a rule's pattern is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `recipient = ...`: decides the replies to RCPT, DATA and the final ".".
    Recipient,
    /// `sender = ...`: decides the reply to MAIL.
    Sender,
}

/// One `[[rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Whether `pattern` is matched against recipients or senders.
    pub target: Target,
    /// Lower-cased address glob (`*`, `?`), matched case-insensitively.
    pub pattern: String,
    /// What happens to a matching recipient.
    pub action: Action,
    /// A slow reply for this recipient: wait this long before replying at the stage.
    pub delay: Option<(Stage, Duration)>,
}

/// Session-wide faults (`[session]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFaults {
    /// Offer STARTTLS when the server has TLS (false = the "no STARTTLS" fault).
    pub starttls: bool,
    /// Advertise PIPELINING (false: a client must wait for each reply before the next command).
    pub pipelining: bool,
    /// Advertise DSN (RFC 3461): accept and record RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT,
    /// and write a success report for a recipient that asked `NOTIFY=SUCCESS`.
    pub dsn: bool,
    /// Every AUTH attempt fails with 535 5.7.8.
    pub auth_fails: bool,
    /// Abort every TLS handshake (after STARTTLS or on the implicit-TLS listener).
    pub abort_tls_handshake: bool,
    /// Replaces the 220 greeting; a 421 closes the connection right after.
    pub greeting: Option<Reply>,
    /// Reply 421 4.7.0 at the next MAIL once a session has had this many messages accepted.
    pub disconnect_after_messages: Option<u32>,
    /// Reply `.1` at stage `.0` of every session, then close.
    pub disconnect_at: Option<(Stage, Reply)>,
    /// Slow replies, per stage, for every session.
    pub delays: BTreeMap<Stage, Duration>,
    /// Raw bytes written in the same write as the reply at a stage (a reply the client did not
    /// ask for: the STARTTLS response injection of CVE-2011-0411, a stray extra reply).
    pub inject: BTreeMap<Stage, String>,
    /// `inject` only in the first this-many sessions of the sandbox (None: in every session).
    pub inject_sessions: Option<u64>,
    /// Answer this stage with a reply that never ends, until the client hangs up.
    pub flood: Option<(Stage, Flood)>,
    /// Once this many messages were accepted (counted across every session), later messages get
    /// no reply after their final "." until the sandbox is thawed: a relay that freezes with
    /// transactions in flight.
    pub freeze_after_messages: Option<u64>,
    /// Once this many messages were stored (counted across every session), the relay is dead:
    /// each session is closed without a reply at its next MAIL, and every new connection is
    /// closed at once (a relay that went down between two transactions).
    pub die_after_messages: Option<u64>,
}

/// The shape of an endless reply (`[session] flood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// `250-` and then bytes without a line end.
    Line,
    /// `250-flood` lines without a last line.
    Lines,
}

impl Default for SessionFaults {
    fn default() -> Self {
        SessionFaults {
            starttls: true,
            pipelining: true,
            dsn: false,
            auth_fails: false,
            abort_tls_handshake: false,
            greeting: None,
            disconnect_after_messages: None,
            disconnect_at: None,
            delays: BTreeMap::new(),
            inject: BTreeMap::new(),
            inject_sessions: None,
            flood: None,
            freeze_after_messages: None,
            die_after_messages: None,
        }
    }
}

/// A parsed, validated script.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Faults for every session.
    pub session: SessionFaults,
    /// Per-recipient rules, first match wins; no match accepts.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSession {
    starttls: Option<bool>,
    pipelining: Option<bool>,
    dsn: Option<bool>,
    auth: Option<String>,
    tls_handshake: Option<String>,
    greeting: Option<String>,
    disconnect_after_messages: Option<u32>,
    disconnect_at: Option<Stage>,
    disconnect_reply: Option<String>,
    #[serde(default)]
    delay_ms: BTreeMap<Stage, u64>,
    #[serde(default)]
    inject: BTreeMap<Stage, String>,
    inject_sessions: Option<u64>,
    flood_at: Option<Stage>,
    flood: Option<String>,
    freeze_after_messages: Option<u64>,
    die_after_messages: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    recipient: Option<String>,
    sender: Option<String>,
    action: String,
    reply: Option<String>,
    at: Option<Stage>,
    attempts: Option<u32>,
    delay_ms: Option<u64>,
    delay_at: Option<Stage>,
    status: Option<String>,
    diagnostic: Option<String>,
    feedback_type: Option<String>,
    raw_reply: Option<String>,
    inject: Option<String>,
}

impl Script {
    /// Every recipient accepted, no faults.
    pub fn accept_all() -> Script {
        Script::default()
    }

    /// Parses a TOML script (see the module docs); every problem names the rule and the fix.
    pub fn parse(toml_text: &str) -> Result<Script, Error> {
        let raw: RawScript = toml::from_str(toml_text)?;
        let session = parse_session(raw.session)?;
        let rules = raw
            .rule
            .into_iter()
            .enumerate()
            .map(|(i, r)| parse_rule(i + 1, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Script { session, rules })
    }

    /// The first recipient rule whose pattern matches `recipient` (case-insensitive).
    pub fn rule_for(&self, recipient: &str) -> Option<&Rule> {
        self.first_match(Target::Recipient, recipient)
    }

    /// The first sender rule whose pattern matches `sender` (case-insensitive).
    pub fn sender_rule_for(&self, sender: &str) -> Option<&Rule> {
        self.first_match(Target::Sender, sender)
    }

    fn first_match(&self, target: Target, address: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|rule| rule.target == target && pattern_matches(&rule.pattern, address))
    }
}

fn parse_session(raw: RawSession) -> Result<SessionFaults, Error> {
    let auth_fails = match raw.auth.as_deref() {
        None | Some("ok") => false,
        Some("fail") => true,
        Some(other) => {
            return Err(invalid(
                format!("[session] auth = \"{other}\" is not known"),
                "Use auth = \"ok\" or auth = \"fail\".",
            ));
        }
    };
    let abort_tls_handshake = match raw.tls_handshake.as_deref() {
        None | Some("ok") => false,
        Some("abort") => true,
        Some(other) => {
            return Err(invalid(
                format!("[session] tls_handshake = \"{other}\" is not known"),
                "Use tls_handshake = \"ok\" or tls_handshake = \"abort\".",
            ));
        }
    };
    let greeting = raw
        .greeting
        .map(|g| {
            let reply = Reply::parse(&g)
                .map_err(|e| invalid(format!("[session] greeting: {e}"), REPLY_FIX))?;
            if reply.code < 400 {
                return Err(invalid(
                    format!("[session] greeting {} is not a refusal", reply.code),
                    "Use a 421 or 554 greeting, or remove `greeting` for the normal 220.",
                ));
            }
            Ok(reply)
        })
        .transpose()?;
    let disconnect_reply = raw
        .disconnect_reply
        .map(|r| {
            Reply::parse(&r)
                .map_err(|e| invalid(format!("[session] disconnect_reply: {e}"), REPLY_FIX))
        })
        .transpose()?;
    let disconnect_at = match (raw.disconnect_at, disconnect_reply) {
        (Some(Stage::Greeting), _) => {
            return Err(invalid(
                "[session] disconnect_at = \"greeting\" is what `greeting` does",
                "Use greeting = \"421 4.3.2 ...\" instead.",
            ));
        }
        (Some(stage), reply) => Some((
            stage,
            reply.unwrap_or_else(|| {
                Reply::new(421, "4.3.2", "sandbox closing the connection (scripted)")
            }),
        )),
        (None, Some(_)) => {
            return Err(invalid(
                "[session] disconnect_reply without disconnect_at",
                "Add disconnect_at = \"ehlo\" (or starttls, auth, mail, rcpt, data, message).",
            ));
        }
        (None, None) => None,
    };
    let flood = match (raw.flood_at, raw.flood.as_deref()) {
        (None, None) => None,
        (Some(stage), None | Some("line")) => Some((stage, Flood::Line)),
        (Some(stage), Some("lines")) => Some((stage, Flood::Lines)),
        (Some(_), Some(other)) => {
            return Err(invalid(
                format!("[session] flood = \"{other}\" is not known"),
                "Use flood = \"line\" (one endless line) or \"lines\" (endless lines).",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "[session] flood without flood_at",
                "Add flood_at = \"mail\" (or greeting, ehlo, starttls, auth, rcpt, data, message).",
            ));
        }
    };
    if let Some((stage, text)) = raw.inject.iter().find(|(_, text)| text.is_empty()) {
        return Err(invalid(
            format!("[session] inject.{stage} is empty ({text:?})"),
            "Give the raw bytes to write after that stage's reply, e.g. \"250 extra\\r\\n\".",
        ));
    }
    match raw.inject_sessions {
        Some(0) => {
            return Err(invalid(
                "[session] inject_sessions = 0 injects nothing",
                "Use inject_sessions = 1 or more, or remove `inject` and `inject_sessions`.",
            ));
        }
        Some(_) if raw.inject.is_empty() => {
            return Err(invalid(
                "[session] inject_sessions without inject",
                "Add inject = { mail = \"250 extra\\r\\n\" } (or another stage), or remove inject_sessions.",
            ));
        }
        _ => {}
    }
    Ok(SessionFaults {
        inject: raw.inject,
        inject_sessions: raw.inject_sessions,
        freeze_after_messages: raw.freeze_after_messages,
        die_after_messages: raw.die_after_messages,
        pipelining: raw.pipelining.unwrap_or(true),
        dsn: raw.dsn.unwrap_or(false),
        flood,
        disconnect_at,
        starttls: raw.starttls.unwrap_or(true),
        auth_fails,
        abort_tls_handshake,
        greeting,
        disconnect_after_messages: raw.disconnect_after_messages,
        delays: raw
            .delay_ms
            .into_iter()
            .map(|(stage, ms)| (stage, Duration::from_millis(ms)))
            .collect(),
    })
}

const REPLY_FIX: &str =
    "Write the reply as code, enhanced code and text, e.g. \"550 5.1.1 no such user\".";

fn parse_rule(index: usize, raw: RawRule) -> Result<Rule, Error> {
    let (target, address) = match (raw.recipient.as_deref(), raw.sender.as_deref()) {
        (Some(recipient), None) => (Target::Recipient, recipient),
        (None, Some(sender)) => (Target::Sender, sender),
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!("rule {index} has both `recipient` and `sender`"),
                "Split it into two rules: one with recipient = ..., one with sender = ....",
            ));
        }
        (None, None) => {
            return Err(invalid(
                format!("rule {index} has neither `recipient` nor `sender`"),
                "Add recipient = \"a@example.com\" (replies to RCPT, DATA and the message) or sender = \"a@example.com\" (the reply to MAIL).",
            ));
        }
    };
    let key = match target {
        Target::Recipient => "recipient",
        Target::Sender => "sender",
    };
    let name = format!("rule {index} ({key} = \"{address}\")");
    let pattern = address.trim().to_ascii_lowercase();
    if pattern.is_empty()
        || pattern
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>')
    {
        return Err(invalid(
            format!("{name}: the {key} pattern is empty or has spaces or angle brackets"),
            "Use an address (a@example.com), a domain (*@example.com) or a glob (bounce-*@*).",
        ));
    }
    let reply = raw
        .reply
        .as_deref()
        .map(Reply::parse)
        .transpose()
        .map_err(|e| invalid(format!("{name}: reply: {e}"), REPLY_FIX))?;
    let allowed: &[&str] = match raw.action.as_str() {
        "drop" => &[],
        "accept" => &["raw_reply", "inject"],
        "hang" => &["at"],
        "reject" | "disconnect" => &["reply", "at"],
        "greylist" => &["reply", "attempts"],
        "bounce" => &["status", "diagnostic"],
        "complain" => &["feedback_type"],
        other => {
            return Err(invalid(
                format!("{name}: action = \"{other}\" is not known"),
                "Use one of accept, reject, greylist, disconnect, drop, hang, bounce, complain.",
            ));
        }
    };
    if target == Target::Sender && !matches!(raw.action.as_str(), "reject" | "disconnect" | "hang")
    {
        return Err(invalid(
            format!(
                "{name}: action = \"{}\" does not apply to a sender rule",
                raw.action
            ),
            "A sender rule can reject, disconnect or hang at MAIL; use recipient = ... for the others.",
        ));
    }
    let given = [
        ("reply", raw.reply.is_some()),
        ("at", raw.at.is_some()),
        ("attempts", raw.attempts.is_some()),
        ("status", raw.status.is_some()),
        ("diagnostic", raw.diagnostic.is_some()),
        ("feedback_type", raw.feedback_type.is_some()),
        ("raw_reply", raw.raw_reply.is_some()),
        ("inject", raw.inject.is_some()),
    ];
    if let Some((key, _)) = given
        .iter()
        .find(|(key, set)| *set && !allowed.contains(key))
    {
        return Err(invalid(
            format!(
                "{name}: `{key}` does not apply to action = \"{}\"",
                raw.action
            ),
            format!("Remove `{key}` from this rule."),
        ));
    }
    // A recipient is known from RCPT on, a sender only at MAIL: each kind of rule has its stages.
    let (default_stage, stages, stage_fix): (Stage, &[Stage], &str) = match target {
        Target::Recipient => (
            Stage::Rcpt,
            &[Stage::Rcpt, Stage::Data, Stage::Message],
            "\"rcpt\", \"data\" or \"message\"",
        ),
        Target::Sender => (Stage::Mail, &[Stage::Mail], "\"mail\" (or leave it out)"),
    };
    let at = raw.at.unwrap_or(default_stage);
    if !stages.contains(&at) {
        return Err(invalid(
            format!("{name}: at = \"{at}\" is not a stage this rule can decide"),
            format!("Use at = {stage_fix}."),
        ));
    }
    for (key, value) in [("raw_reply", &raw.raw_reply), ("inject", &raw.inject)] {
        if value.as_deref() == Some("") {
            return Err(invalid(
                format!("{name}: {key} is empty"),
                format!("Give the raw bytes to write, e.g. {key} = \"250 2.0.0 extra\\r\\n\"."),
            ));
        }
    }
    let action = match raw.action.as_str() {
        "accept" => Action::Accept {
            raw_reply: raw.raw_reply,
            inject: raw.inject,
        },
        "drop" => Action::Drop,
        "hang" => Action::Hang { at },
        "reject" => {
            let reply = reply.ok_or_else(|| {
                invalid(
                    format!("{name}: action = \"reject\" needs a reply"),
                    REPLY_FIX,
                )
            })?;
            if reply.code < 400 {
                return Err(invalid(
                    format!("{name}: reject with {} is not a rejection", reply.code),
                    "Use a 4xx or 5xx reply, or action = \"accept\".",
                ));
            }
            Action::Reject { at, reply }
        }
        "disconnect" => Action::Disconnect {
            at,
            reply: reply.unwrap_or_else(|| {
                Reply::new(421, "4.3.2", "sandbox closing the connection (scripted)")
            }),
        },
        "greylist" => {
            let reply =
                reply.unwrap_or_else(|| Reply::new(450, "4.2.0", "greylisted, try again later"));
            if reply.code / 100 != 4 {
                return Err(invalid(
                    format!("{name}: a greylist reply must be 4xx, not {}", reply.code),
                    "Use e.g. reply = \"450 4.2.0 greylisted\".",
                ));
            }
            Action::Greylist {
                attempts: raw.attempts.unwrap_or(1),
                reply,
            }
        }
        "bounce" => {
            let status = raw.status.unwrap_or_else(|| "5.1.1".to_owned());
            if !enhanced_code_ok(&status) || !(status.starts_with('4') || status.starts_with('5')) {
                return Err(invalid(
                    format!("{name}: status = \"{status}\" is not a 4.x.x or 5.x.x code"),
                    "Use e.g. status = \"5.1.1\".",
                ));
            }
            let diagnostic = raw.diagnostic.unwrap_or_else(|| {
                let class = if status.starts_with('4') { 450 } else { 550 };
                format!("smtp; {class} {status} recipient rejected by the remote server")
            });
            if diagnostic.bytes().any(|b| b == b'\r' || b == b'\n') {
                return Err(invalid(
                    format!("{name}: diagnostic must be one line"),
                    "Remove the line breaks.",
                ));
            }
            Action::Bounce { status, diagnostic }
        }
        "complain" => {
            let feedback_type = raw.feedback_type.unwrap_or_else(|| "abuse".to_owned());
            if !matches!(
                feedback_type.as_str(),
                "abuse" | "fraud" | "other" | "virus" | "not-spam" | "auth-failure"
            ) {
                return Err(invalid(
                    format!("{name}: feedback_type = \"{feedback_type}\" is not an RFC 5965 type"),
                    "Use abuse, fraud, other, virus, not-spam or auth-failure.",
                ));
            }
            Action::Complain { feedback_type }
        }
        _ => unreachable_action(),
    };
    if raw.delay_at.is_some() && raw.delay_ms.is_none() {
        return Err(invalid(
            format!("{name}: delay_at without delay_ms"),
            "Add delay_ms = <milliseconds>, or remove delay_at.",
        ));
    }
    let delay_at = raw.delay_at.unwrap_or(default_stage);
    if !stages.contains(&delay_at) {
        return Err(invalid(
            format!("{name}: delay_at = \"{delay_at}\" is not a stage this rule can decide"),
            format!("Use delay_at = {stage_fix}; session-wide delays go in [session] delay_ms."),
        ));
    }
    Ok(Rule {
        target,
        pattern,
        action,
        delay: raw.delay_ms.map(|ms| (delay_at, Duration::from_millis(ms))),
    })
}

// The action names were checked against `allowed` above, so this arm cannot be reached; it is a
// function so the match stays exhaustive without a panic.
fn unreachable_action() -> Action {
    Action::Accept {
        raw_reply: None,
        inject: None,
    }
}

/// `class.subject.detail` (RFC 3463): digits, subject and detail at most three digits.
fn enhanced_code_ok(s: &str) -> bool {
    let fields: Vec<&str> = s.split('.').collect();
    fields.len() == 3
        && fields[0].len() == 1
        && matches!(fields[0], "2" | "4" | "5")
        && fields
            .iter()
            .all(|f| !f.is_empty() && f.len() <= 3 && f.bytes().all(|b| b.is_ascii_digit()))
}

/// Case-insensitive glob match: `*` any run of characters, `?` one character.
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative wildcard matching with single backtrack point: linear enough for addresses and
    // immune to the exponential blow-up of naive recursion on hostile patterns.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn patterns_match_exact_domain_and_glob() {
        assert!(pattern_matches("a@example.com", "A@Example.COM"));
        assert!(!pattern_matches("a@example.com", "ab@example.com"));
        assert!(pattern_matches("*@example.com", "x@example.com"));
        assert!(!pattern_matches("*@example.com", "x@example.com.evil"));
        assert!(pattern_matches("bounce-?@*", "bounce-7@d.org"));
        assert!(!pattern_matches("bounce-?@*", "bounce-77@d.org"));
        assert!(pattern_matches("*", "anything@x"));
    }

    #[test]
    fn parses_every_action_and_session_fault() {
        let script = Script::parse(
            r#"
            [session]
            starttls = false
            auth = "fail"
            tls_handshake = "abort"
            greeting = "421 4.3.2 not today"
            disconnect_after_messages = 2
            disconnect_at = "auth"
            delay_ms = { message = 1500 }

            [[rule]]
            recipient = "hard@example.com"
            action = "reject"
            reply = "550 5.1.1 no such user"

            [[rule]]
            recipient = "*@grey.example"
            action = "greylist"
            attempts = 2

            [[rule]]
            recipient = "late@*"
            action = "disconnect"
            at = "message"
            delay_ms = 10
            delay_at = "message"

            [[rule]]
            recipient = "dsn@*"
            action = "bounce"

            [[rule]]
            recipient = "arf@*"
            action = "complain"

            [[rule]]
            recipient = "gone@*"
            action = "drop"
            "#,
        )
        .unwrap();
        assert!(!script.session.starttls);
        assert!(script.session.auth_fails);
        assert!(script.session.abort_tls_handshake);
        assert_eq!(script.session.greeting.as_ref().unwrap().code, 421);
        assert_eq!(
            script.session.disconnect_at,
            Some((
                Stage::Auth,
                Reply::new(421, "4.3.2", "sandbox closing the connection (scripted)")
            ))
        );
        assert_eq!(
            script.session.delays.get(&Stage::Message),
            Some(&Duration::from_millis(1500))
        );
        assert_eq!(
            script.rule_for("HARD@example.com").unwrap().action,
            Action::Reject {
                at: Stage::Rcpt,
                reply: Reply::new(550, "5.1.1", "no such user")
            }
        );
        assert!(matches!(
            script.rule_for("x@grey.example").unwrap().action,
            Action::Greylist { attempts: 2, .. }
        ));
        let late = script.rule_for("late@x.org").unwrap();
        assert_eq!(
            late.delay,
            Some((Stage::Message, Duration::from_millis(10)))
        );
        assert!(matches!(
            &script.rule_for("dsn@x").unwrap().action,
            Action::Bounce { status, .. } if status == "5.1.1"
        ));
        assert!(matches!(
            &script.rule_for("arf@x").unwrap().action,
            Action::Complain { feedback_type } if feedback_type == "abuse"
        ));
        assert_eq!(script.rule_for("gone@x").unwrap().action, Action::Drop);
        assert!(script.rule_for("nobody@else").is_none());
    }

    #[test]
    fn parses_the_faults_tests_and_hostile_relays_need() {
        let script = Script::parse(
            r#"
            [session]
            pipelining = false
            inject = { mail = "250 2.1.0 extra\r\n" }
            inject_sessions = 1
            freeze_after_messages = 60

            [[rule]]
            sender = "bad*@*"
            action = "reject"
            reply = "553 5.7.1 not yours"

            [[rule]]
            recipient = "silent*@*"
            action = "hang"
            at = "message"

            [[rule]]
            recipient = "odd@*"
            action = "accept"
            raw_reply = "354 go ahead\r\n"
            inject = "250 2.0.0 stray\r\n"
            "#,
        )
        .unwrap();
        let session = &script.session;
        assert!(!session.pipelining);
        assert_eq!(session.inject_sessions, Some(1));
        assert_eq!(session.freeze_after_messages, Some(60));
        let bad = script.sender_rule_for("bad-sender@x").unwrap();
        assert_eq!(bad.target, Target::Sender);
        assert!(matches!(
            &bad.action,
            Action::Reject {
                at: Stage::Mail,
                ..
            }
        ));
        assert!(
            script.rule_for("bad-sender@x").is_none(),
            "a sender rule is not a recipient rule"
        );
        assert!(script.sender_rule_for("silent1@x").is_none());
        assert_eq!(
            script.rule_for("silent1@x").unwrap().action,
            Action::Hang { at: Stage::Message }
        );
        assert_eq!(
            script.rule_for("odd@x").unwrap().action,
            Action::Accept {
                raw_reply: Some("354 go ahead\r\n".into()),
                inject: Some("250 2.0.0 stray\r\n".into()),
            }
        );
    }

    #[test]
    fn rejects_bad_scripts_with_the_rule_and_a_fix() {
        let cases = [
            (
                "[[rule]]\nrecipient = \"a@b\"\naction = \"explode\"",
                "not known",
            ),
            (
                "[[rule]]\nrecipient = \"a@b\"\naction = \"reject\"",
                "needs a reply",
            ),
            (
                "[[rule]]\nrecipient = \"a@b\"\naction = \"reject\"\nreply = \"550 4.1.1 x\"",
                "does not match",
            ),
            (
                "[[rule]]\nrecipient = \"a@b\"\naction = \"accept\"\nattempts = 3",
                "`attempts` does not apply",
            ),
            ("[session]\nauth = \"maybe\"", "auth = \"maybe\""),
            ("[session]\nbogus = 1", "unknown field"),
            (
                "[session]\ndisconnect_reply = \"421 4.3.2 x\"",
                "without disconnect_at",
            ),
            (
                "[[rule]]\nrecipient = \"a b\"\naction = \"accept\"",
                "spaces",
            ),
            (
                "[[rule]]\naction = \"accept\"",
                "neither `recipient` nor `sender`",
            ),
            (
                "[[rule]]\nrecipient = \"a@b\"\nsender = \"c@d\"\naction = \"accept\"",
                "both `recipient` and `sender`",
            ),
            (
                "[[rule]]\nsender = \"a@b\"\naction = \"greylist\"",
                "does not apply to a sender rule",
            ),
            (
                "[[rule]]\nsender = \"a@b\"\naction = \"hang\"\nat = \"rcpt\"",
                "at = \"rcpt\" is not a stage this rule can decide",
            ),
            (
                "[[rule]]\nrecipient = \"a@b\"\naction = \"hang\"\nat = \"mail\"",
                "at = \"mail\" is not a stage this rule can decide",
            ),
            (
                "[[rule]]\nrecipient = \"a@b\"\naction = \"reject\"\nreply = \"550 5.1.1 x\"\ninject = \"x\"",
                "`inject` does not apply",
            ),
            (
                "[[rule]]\nrecipient = \"a@b\"\naction = \"accept\"\nraw_reply = \"\"",
                "raw_reply is empty",
            ),
            (
                "[session]\ninject_sessions = 1",
                "inject_sessions without inject",
            ),
            (
                "[session]\ninject = { mail = \"x\" }\ninject_sessions = 0",
                "inject_sessions = 0",
            ),
            ("[session]\npipelining = \"no\"", "invalid type"),
            ("[session]\nfreeze_after_messages = -1", "invalid value"),
        ];
        for (text, needle) in cases {
            let err = Script::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn reply_parse_checks_code_and_enhanced_class() {
        assert_eq!(
            Reply::parse("452 4.2.2 mailbox full").unwrap(),
            Reply::new(452, "4.2.2", "mailbox full")
        );
        assert!(Reply::parse("45 4.2.2 x").is_err());
        assert!(Reply::parse("452 4.2 x").is_err());
        assert!(Reply::parse("452 5.2.2 x").is_err());
    }
}
