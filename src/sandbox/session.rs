//! The SMTP server dialogue as an I/O-free state machine: the shell feeds it one received line at
//! a time (`Session::feed`) and carries out the returned `Response` (wait, write the reply,
//! deliver, switch to TLS, close). Owns RFC 5321 sequencing, limits and the script's
//! per-recipient decisions; must not touch sockets, files or clocks, so every rule is unit-tested
//! without a network.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::dsn;
pub use super::policy::Policy;
pub use super::response::{Accepted, After, Feedback, FeedbackReport, Response};
use super::script::{Action, Rule, Stage};

/// A command line longer than this (CRLF included) gets 500 5.5.2 (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// AUTH lines may be longer than other commands (RFC 4954 §4: 12288 octets).
pub const MAX_AUTH_LINE: usize = 12288;
/// A message text line longer than this (CRLF included) fails the message (RFC 5321 §4.5.3.1.6).
pub const MAX_TEXT_LINE: usize = 1000;
/// Transcript lines kept (the oldest are dropped first).
pub const TRANSCRIPT_LIMIT: usize = 100_000;
/// Sessions are closed after this many failed commands, so a hostile client cannot loop forever.
pub const MAX_ERRORS: u32 = 10;

#[derive(Debug)]
enum Mode {
    Command,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPassword {
        user: String,
    },
    /// `AUTH XOAUTH2` without an initial response: the next line is it.
    AuthXoauth2,
    /// A refused token got the 334 error challenge; the client's next line (empty) gets 535.
    AuthXoauth2Refused,
    Data(DataState),
}

#[derive(Debug)]
struct DataState {
    buf: Vec<u8>,
    too_big: bool,
    overlong: bool,
    /// Whether the previous line ended in CRLF: "." only ends the message after a CRLF, so a
    /// bare-LF "\n.\r\n" cannot smuggle a second message.
    after_crlf: bool,
}

#[derive(Debug)]
struct Transaction {
    from: String,
    rcpts: Vec<String>,
    /// The matched rule of each accepted recipient, in the same order.
    rules: Vec<Option<Rule>>,
    /// MAIL carried SMTPUTF8: non-ASCII addresses are allowed.
    smtputf8: bool,
    /// RFC 3461 parameters of MAIL (with `[session] dsn`).
    dsn: dsn::MailParams,
    /// RFC 3461 parameters of each accepted RCPT, in the same order.
    rcpt_dsn: Vec<dsn::RcptParams>,
}

/// One SMTP session (one TCP connection, possibly upgraded to TLS).
#[derive(Debug)]
pub struct Session {
    policy: std::sync::Arc<Policy>,
    /// This session's number in the sandbox, from 1 (for `inject_sessions`).
    number: u64,
    tls: bool,
    helo: Option<String>,
    esmtp: bool,
    authenticated: bool,
    refused: bool,
    mode: Mode,
    tx: Option<Transaction>,
    errors: u32,
    messages: u32,
}

impl Session {
    /// A new session; `tls` is true on the implicit-TLS listener.
    pub fn new(policy: std::sync::Arc<Policy>, tls: bool) -> Session {
        Session {
            number: policy.observer.session_started(),
            policy,
            tls,
            helo: None,
            esmtp: false,
            authenticated: false,
            refused: false,
            mode: Mode::Command,
            tx: None,
            errors: 0,
            messages: 0,
        }
    }

    /// The longest line the shell should buffer now (longer lines are reported via `overlong`).
    pub fn line_limit(&self) -> usize {
        match self.mode {
            Mode::Data(_) => MAX_TEXT_LINE,
            _ => MAX_AUTH_LINE,
        }
    }

    /// Whether the session is in message-text mode (the shell does not flush per line there).
    pub fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data(_))
    }

    fn delay(&self, stage: Stage) -> Duration {
        let mut delay = self
            .policy
            .script
            .session
            .delays
            .get(&stage)
            .copied()
            .unwrap_or_default();
        if matches!(stage, Stage::Data | Stage::Message)
            && let Some(tx) = &self.tx
        {
            for rule in tx.rules.iter().flatten() {
                if let Some((s, d)) = rule.delay
                    && s == stage
                {
                    delay = delay.max(d);
                }
            }
        }
        delay
    }

    /// The reply to a new connection.
    pub fn greeting(&mut self) -> Response {
        let response = self.plain_greeting();
        self.scripted(Stage::Greeting, response)
    }

    fn plain_greeting(&mut self) -> Response {
        let delay = self.delay(Stage::Greeting);
        match &self.policy.script.session.greeting {
            Some(reply) => {
                let response =
                    Response::reply(reply.code, &reply.enhanced, &reply.text).delayed(delay);
                if reply.code == 421 {
                    response.then(After::Close)
                } else {
                    self.refused = true;
                    response
                }
            }
            None => Response {
                reply: format!(
                    "220 {} ESMTP mailroom sandbox ready\r\n",
                    self.policy.hostname
                ),
                ..Response::none()
            }
            .delayed(delay),
        }
    }

    /// The TLS handshake after STARTTLS succeeded: the client starts over (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.authenticated = false;
        self.tx = None;
        self.mode = Mode::Command;
    }

    /// A line longer than `line_limit()` arrived (its excess was discarded by the shell).
    pub fn overlong(&mut self) -> Response {
        if let Mode::Data(data) = &mut self.mode {
            data.overlong = true;
            data.after_crlf = true;
            return Response::none();
        }
        self.policy.record("<line too long>");
        self.mode = Mode::Command;
        self.error(500, "5.5.2", "line too long")
    }

    /// Feeds one received line, including its line ending (CRLF, or a bare LF).
    pub fn feed(&mut self, line: &[u8]) -> Response {
        if let Mode::Data(_) = self.mode {
            let response = self.data_line(line);
            // Back in command mode: that line ended the message, and this is its reply.
            return if matches!(self.mode, Mode::Command) {
                self.scripted(Stage::Message, response)
            } else {
                response
            };
        }
        let text = strip_eol(line);
        match std::mem::replace(&mut self.mode, Mode::Command) {
            Mode::AuthPlain => {
                self.policy.record("<redacted>");
                self.auth_plain_response(text)
            }
            Mode::AuthLoginUser => {
                self.policy.record("<redacted>");
                if text == b"*" {
                    return self.error(501, "5.7.0", "authentication cancelled");
                }
                match decode(text) {
                    Some(user) => {
                        self.mode = Mode::AuthLoginPassword { user };
                        Response {
                            reply: "334 UGFzc3dvcmQ6\r\n".to_owned(),
                            ..Response::none()
                        }
                    }
                    None => self.error(501, "5.5.2", "cannot decode the AUTH response"),
                }
            }
            Mode::AuthLoginPassword { user } => {
                self.policy.record("<redacted>");
                if text == b"*" {
                    return self.error(501, "5.7.0", "authentication cancelled");
                }
                match decode(text) {
                    Some(password) => self.check_credentials(&user, &password),
                    None => self.error(501, "5.5.2", "cannot decode the AUTH response"),
                }
            }
            Mode::AuthXoauth2 => {
                self.policy.record("<redacted>");
                self.xoauth2_response(text)
            }
            Mode::AuthXoauth2Refused => {
                self.policy
                    .record(String::from_utf8_lossy(text).into_owned());
                self.error(535, "5.7.8", "username and token not accepted")
            }
            Mode::Command | Mode::Data(_) => self.command(text),
        }
    }

    fn error(&mut self, code: u16, enhanced: &str, text: &str) -> Response {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            return Response::reply(421, "4.7.0", "too many errors, closing the connection")
                .then(After::Close);
        }
        Response::reply(code, enhanced, text)
    }

    fn command(&mut self, line: &[u8]) -> Response {
        let text = String::from_utf8_lossy(line).into_owned();
        let (verb, args) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_owned()),
            None => (text.trim().to_ascii_uppercase(), String::new()),
        };
        if verb == "AUTH" {
            let mut parts = args.split_whitespace();
            let mech = parts.next().unwrap_or("");
            let redacted = if parts.next().is_some() {
                " <redacted>"
            } else {
                ""
            };
            self.policy.record(format!("AUTH {mech}{redacted}"));
        } else {
            self.policy.record(text.clone());
        }
        if verb != "AUTH" && line.len() + 2 > MAX_COMMAND_LINE {
            return self.error(500, "5.5.2", "line too long");
        }
        if self.refused && verb != "QUIT" {
            return self.error(503, "5.5.1", "no SMTP service here; send QUIT");
        }
        let stage = match verb.as_str() {
            "EHLO" | "HELO" => Some(Stage::Ehlo),
            "STARTTLS" => Some(Stage::Starttls),
            "AUTH" => Some(Stage::Auth),
            "MAIL" => Some(Stage::Mail),
            "RCPT" => Some(Stage::Rcpt),
            "DATA" => Some(Stage::Data),
            _ => None,
        };
        if let Some(response) = stage.and_then(|stage| self.scripted_disconnect(stage)) {
            return response;
        }
        let response = self.dispatch(&verb, &args);
        match stage {
            Some(stage) => self.scripted(stage, response),
            None => response,
        }
    }

    /// The `inject` and `flood` faults of the script at `stage`, applied to its reply.
    fn scripted(&self, stage: Stage, mut response: Response) -> Response {
        let faults = &self.policy.script.session;
        if let Some((_, flood)) = faults.flood.filter(|(at, _)| *at == stage) {
            return Response {
                reply: String::new(),
                ..response
            }
            .then(After::Flood(flood));
        }
        let silent = matches!(response.after, After::Hang | After::Drop);
        let injecting = faults.inject_sessions.is_none_or(|n| self.number <= n);
        if let Some(extra) = faults.inject.get(&stage)
            && injecting
            && !silent
        {
            response.reply.push_str(extra);
        }
        response
    }

    fn dispatch(&mut self, verb: &str, args: &str) -> Response {
        let args = args.to_owned();
        match verb {
            "EHLO" | "HELO" => self.helo(verb, &args),
            "STARTTLS" => self.starttls(&args),
            "AUTH" => self.auth(&args),
            "MAIL" => self.mail(&args),
            "RCPT" => self.rcpt(&args),
            "DATA" => self.data(&args),
            "RSET" => {
                if !args.is_empty() {
                    return self.error(501, "5.5.4", "RSET takes no arguments");
                }
                self.tx = None;
                Response::reply(250, "2.0.0", "Ok")
            }
            "NOOP" => Response::reply(250, "2.0.0", "Ok"),
            "QUIT" => Response::reply(221, "2.0.0", "Bye").then(After::Close),
            "VRFY" => Response::reply(252, "2.5.0", "cannot VRFY; send some mail and see"),
            "HELP" => Response::reply(214, "2.0.0", "see RFC 5321"),
            "" => self.error(500, "5.5.2", "empty command"),
            _ => self.error(500, "5.5.2", "command not recognized"),
        }
    }

    /// The session-wide `disconnect_at` fault, if it applies at `stage`.
    fn scripted_disconnect(&self, stage: Stage) -> Option<Response> {
        let (at, reply) = self.policy.script.session.disconnect_at.as_ref()?;
        (*at == stage).then(|| {
            Response::reply(reply.code, &reply.enhanced, &reply.text)
                .delayed(self.delay(stage))
                .then(After::Close)
        })
    }

    fn starttls_offered(&self) -> bool {
        self.policy.tls_available && self.policy.script.session.starttls && !self.tls
    }

    fn helo(&mut self, verb: &str, args: &str) -> Response {
        let delay = self.delay(Stage::Ehlo);
        let Some(name) = args.split_whitespace().next() else {
            return self.error(
                501,
                "5.5.4",
                &format!("{verb} needs a domain or address literal"),
            );
        };
        self.helo = Some(name.to_owned());
        self.tx = None;
        self.esmtp = verb == "EHLO";
        if !self.esmtp {
            return Response {
                reply: format!("250 {}\r\n", self.policy.hostname),
                ..Response::none()
            }
            .delayed(delay);
        }
        let mut lines = vec![format!("{} greets {name}", self.policy.hostname)];
        if self.policy.script.session.pipelining {
            lines.push("PIPELINING".to_owned());
        }
        lines.extend([
            format!("SIZE {}", self.policy.max_message_size),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ]);
        if self.policy.script.session.dsn {
            lines.push("DSN".to_owned());
        }
        if self.starttls_offered() {
            lines.push("STARTTLS".to_owned());
        }
        if self.policy.auth.is_some() && self.tls {
            if self.policy.xoauth2_token.is_some() {
                lines.push("AUTH PLAIN LOGIN XOAUTH2".to_owned());
            } else {
                lines.push("AUTH PLAIN LOGIN".to_owned());
            }
        }
        let mut reply = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let _ = write!(reply, "250{sep}{line}\r\n");
        }
        Response {
            reply,
            ..Response::none()
        }
        .delayed(delay)
    }

    fn starttls(&mut self, args: &str) -> Response {
        if !self.starttls_offered() {
            return self.error(502, "5.5.1", "STARTTLS not available");
        }
        if !args.is_empty() {
            return self.error(501, "5.5.4", "STARTTLS takes no arguments");
        }
        Response::reply(220, "2.0.0", "ready to start TLS")
            .delayed(self.delay(Stage::Starttls))
            .then(After::StartTls)
    }

    fn auth(&mut self, args: &str) -> Response {
        if self.policy.auth.is_none() {
            return self.error(502, "5.5.1", "AUTH not available");
        }
        if !self.tls {
            return self.error(538, "5.7.11", "encryption required: issue STARTTLS first");
        }
        if !self.esmtp {
            return self.error(503, "5.5.1", "send EHLO first");
        }
        if self.authenticated {
            return self.error(503, "5.5.1", "already authenticated");
        }
        if self.tx.is_some() {
            return self.error(503, "5.5.1", "AUTH not allowed during a mail transaction");
        }
        let mut parts = args.split_whitespace();
        let mech = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next();
        match (mech.as_str(), initial) {
            ("PLAIN", None) => {
                self.mode = Mode::AuthPlain;
                Response {
                    reply: "334 \r\n".to_owned(),
                    ..Response::none()
                }
            }
            ("PLAIN", Some(initial)) => self.auth_plain_response(initial.as_bytes()),
            ("LOGIN", None) => {
                self.mode = Mode::AuthLoginUser;
                Response {
                    reply: "334 VXNlcm5hbWU6\r\n".to_owned(),
                    ..Response::none()
                }
            }
            ("LOGIN", Some(user)) => match decode(user.as_bytes()) {
                Some(user) => {
                    self.mode = Mode::AuthLoginPassword { user };
                    Response {
                        reply: "334 UGFzc3dvcmQ6\r\n".to_owned(),
                        ..Response::none()
                    }
                }
                None => self.error(501, "5.5.2", "cannot decode the AUTH response"),
            },
            ("XOAUTH2", _) if self.policy.xoauth2_token.is_none() => {
                self.error(504, "5.5.4", "unrecognized authentication mechanism")
            }
            ("XOAUTH2", None) => {
                self.mode = Mode::AuthXoauth2;
                Response {
                    reply: "334 \r\n".to_owned(),
                    ..Response::none()
                }
            }
            ("XOAUTH2", Some(initial)) => self.xoauth2_response(initial.as_bytes()),
            ("", _) => self.error(501, "5.5.4", "AUTH needs a mechanism"),
            _ => self.error(504, "5.5.4", "unrecognized authentication mechanism"),
        }
    }

    fn auth_plain_response(&mut self, response: &[u8]) -> Response {
        if response == b"*" {
            return self.error(501, "5.7.0", "authentication cancelled");
        }
        let decoded = if response == b"=" {
            Some(Vec::new())
        } else {
            BASE64.decode(response).ok()
        };
        let Some(decoded) = decoded else {
            return self.error(501, "5.5.2", "cannot decode the AUTH response");
        };
        let fields: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        if fields.len() != 3 {
            return self.error(535, "5.7.8", "authentication credentials invalid");
        }
        let authzid = String::from_utf8_lossy(fields[0]).into_owned();
        let user = String::from_utf8_lossy(fields[1]).into_owned();
        let password = String::from_utf8_lossy(fields[2]).into_owned();
        if !authzid.is_empty() && authzid != user {
            return self.error(535, "5.7.8", "authentication credentials invalid");
        }
        self.check_credentials(&user, &password)
    }

    /// Checks `user=U^Aauth=Bearer T^A^A` against the `auth` user and the configured token.
    fn xoauth2_response(&mut self, response: &[u8]) -> Response {
        let Some(decoded) = BASE64.decode(response).ok() else {
            return self.error(501, "5.5.2", "cannot decode the AUTH response");
        };
        let text = String::from_utf8_lossy(&decoded);
        let mut user = None;
        let mut token = None;
        for field in text.split('\x01') {
            if let Some(u) = field.strip_prefix("user=") {
                user = Some(u);
            } else if let Some(t) = field.strip_prefix("auth=Bearer ") {
                token = Some(t);
            }
        }
        let delay = self.delay(Stage::Auth);
        let ok = !self.policy.script.session.auth_fails
            && self
                .policy
                .auth
                .as_ref()
                .is_some_and(|(u, _)| Some(u.as_str()) == user)
            && self
                .policy
                .xoauth2_token
                .as_deref()
                .is_some_and(|t| Some(t) == token);
        if ok {
            self.authenticated = true;
            return Response::reply(235, "2.7.0", "authentication successful").delayed(delay);
        }
        self.mode = Mode::AuthXoauth2Refused;
        let challenge = BASE64
            .encode(r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#);
        Response {
            reply: format!("334 {challenge}\r\n"),
            ..Response::none()
        }
        .delayed(delay)
    }

    fn check_credentials(&mut self, user: &str, password: &str) -> Response {
        let delay = self.delay(Stage::Auth);
        let ok = !self.policy.script.session.auth_fails
            && self
                .policy
                .auth
                .as_ref()
                .is_some_and(|(u, p)| u == user && p == password);
        if ok {
            self.authenticated = true;
            Response::reply(235, "2.7.0", "authentication successful").delayed(delay)
        } else {
            self.error(535, "5.7.8", "authentication credentials invalid")
                .delayed(delay)
        }
    }

    fn mail(&mut self, args: &str) -> Response {
        let delay = self.delay(Stage::Mail);
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "send HELO or EHLO first");
        }
        if self.policy.auth.is_some() && !self.authenticated {
            return self.error(530, "5.7.0", "authentication required");
        }
        if self.tx.is_some() {
            return self.error(503, "5.5.1", "nested MAIL command");
        }
        if self
            .policy
            .observer
            .has_died(self.policy.script.session.die_after_messages)
        {
            return Response::none().then(After::Close);
        }
        if let Some(limit) = self.policy.script.session.disconnect_after_messages
            && self.messages >= limit
        {
            return Response::reply(421, "4.7.0", "too many messages in this session (scripted)")
                .delayed(delay)
                .then(After::Close);
        }
        let (path, params) = match parse_path(args, "FROM:") {
            Ok(parsed) => parsed,
            Err(e) => return self.error(501, "5.5.4", e),
        };
        let mut smtputf8 = false;
        let mut mail_dsn = dsn::MailParams::default();
        for param in params.split_whitespace() {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
                None => (param.to_ascii_uppercase(), None),
            };
            if self.policy.script.session.dsn
                && let Some(taken) = dsn::mail_param(&mut mail_dsn, &key, value)
            {
                if let Err(why) = taken {
                    return self.error(501, "5.5.4", why);
                }
                continue;
            }
            match (key.as_str(), value) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(size) if size > self.policy.max_message_size as u64 => {
                        return self.error(552, "5.3.4", "message size exceeds the fixed limit");
                    }
                    Ok(_) => {}
                    Err(_) => return self.error(501, "5.5.4", "bad SIZE value"),
                },
                ("BODY", Some(v))
                    if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                ("BODY", _) => return self.error(501, "5.5.4", "BODY must be 7BIT or 8BITMIME"),
                ("SMTPUTF8", None) => smtputf8 = true,
                _ => return self.error(555, "5.5.4", "unsupported MAIL parameter"),
            }
        }
        if !path.is_empty()
            && let Err(e) = check_address(&path, smtputf8)
        {
            return self.error(e.0, e.1, e.2);
        }
        if let Some(rule) = self.policy.script.sender_rule_for(&path) {
            let delay = match rule.delay {
                Some((_, d)) => delay.max(d),
                None => delay,
            };
            match &rule.action {
                Action::Reject { reply, .. } => {
                    return Response::reply(reply.code, &reply.enhanced, &reply.text)
                        .delayed(delay);
                }
                Action::Disconnect { reply, .. } => {
                    return Response::reply(reply.code, &reply.enhanced, &reply.text)
                        .delayed(delay)
                        .then(After::Close);
                }
                Action::Hang { .. } => return Response::none().delayed(delay).then(After::Hang),
                _ => {}
            }
        }
        self.tx = Some(Transaction {
            from: path,
            rcpts: Vec::new(),
            rules: Vec::new(),
            smtputf8,
            dsn: mail_dsn,
            rcpt_dsn: Vec::new(),
        });
        Response::reply(250, "2.1.0", "Ok").delayed(delay)
    }

    fn rcpt(&mut self, args: &str) -> Response {
        let session_delay = self.delay(Stage::Rcpt);
        let Some(tx) = &self.tx else {
            return self.error(503, "5.5.1", "need MAIL before RCPT");
        };
        if tx.rcpts.len() >= self.policy.max_recipients {
            return Response::reply(452, "4.5.3", "too many recipients").delayed(session_delay);
        }
        let (path, params) = match parse_path(args, "TO:") {
            Ok(parsed) => parsed,
            Err(e) => return self.error(501, "5.5.4", e),
        };
        let mut rcpt_dsn = dsn::RcptParams::default();
        for param in params.split_whitespace() {
            let (key, value) = match param.split_once('=') {
                Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
                None => (param.to_ascii_uppercase(), None),
            };
            match dsn::rcpt_param(&mut rcpt_dsn, &key, value) {
                Some(Ok(())) if self.policy.script.session.dsn => {}
                Some(Err(why)) if self.policy.script.session.dsn => {
                    return self.error(501, "5.5.4", why);
                }
                _ => return self.error(555, "5.5.4", "unsupported RCPT parameter"),
            }
        }
        if let Err(e) = check_address(&path, tx.smtputf8) {
            return self.error(e.0, e.1, e.2);
        }
        let rule = self.policy.script.rule_for(&path).cloned();
        let delay = match rule.as_ref().and_then(|r| r.delay) {
            Some((Stage::Rcpt, d)) => session_delay.max(d),
            _ => session_delay,
        };
        let verdict = match rule.as_ref().map(|r| &r.action) {
            Some(Action::Reject {
                at: Stage::Rcpt,
                reply,
            }) => Some(Response::reply(reply.code, &reply.enhanced, &reply.text)),
            Some(Action::Disconnect {
                at: Stage::Rcpt,
                reply,
            }) => {
                Some(Response::reply(reply.code, &reply.enhanced, &reply.text).then(After::Close))
            }
            Some(Action::Hang { at: Stage::Rcpt }) => Some(Response::none().then(After::Hang)),
            Some(Action::Greylist { attempts, reply }) => {
                if self.policy.greylist_attempt(&path) <= *attempts {
                    Some(Response::reply(reply.code, &reply.enhanced, &reply.text))
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(response) = verdict {
            return response.delayed(delay);
        }
        if let Some(tx) = &mut self.tx {
            tx.rcpts.push(path);
            tx.rules.push(rule);
            tx.rcpt_dsn.push(rcpt_dsn);
        }
        Response::reply(250, "2.1.5", "Ok").delayed(delay)
    }

    fn data(&mut self, args: &str) -> Response {
        let delay = self.delay(Stage::Data);
        let Some(tx) = &self.tx else {
            return self.error(503, "5.5.1", "need MAIL and RCPT before DATA");
        };
        if tx.rcpts.is_empty() {
            return self.error(503, "5.5.1", "need RCPT before DATA");
        }
        if !args.is_empty() {
            return self.error(501, "5.5.4", "DATA takes no arguments");
        }
        for rule in tx.rules.iter().flatten() {
            match &rule.action {
                Action::Reject {
                    at: Stage::Data,
                    reply,
                } => {
                    let response = Response::reply(reply.code, &reply.enhanced, &reply.text);
                    self.tx = None;
                    return response.delayed(delay);
                }
                Action::Disconnect {
                    at: Stage::Data,
                    reply,
                } => {
                    return Response::reply(reply.code, &reply.enhanced, &reply.text)
                        .delayed(delay)
                        .then(After::Close);
                }
                Action::Hang { at: Stage::Data } => {
                    return Response::none().delayed(delay).then(After::Hang);
                }
                _ => {}
            }
        }
        self.mode = Mode::Data(DataState {
            buf: Vec::new(),
            too_big: false,
            overlong: false,
            after_crlf: true,
        });
        // 354 carries no enhanced code (RFC 2034 §3: only 2xx, 4xx and 5xx replies do).
        Response {
            reply: "354 end data with <CR><LF>.<CR><LF>\r\n".to_owned(),
            ..Response::none()
        }
        .delayed(delay)
    }

    fn data_line(&mut self, line: &[u8]) -> Response {
        let Mode::Data(data) = &mut self.mode else {
            return Response::none();
        };
        if data.after_crlf && line == b".\r\n" {
            return self.end_of_data();
        }
        let body = if line.first() == Some(&b'.') && data.after_crlf {
            &line[1..]
        } else {
            line
        };
        data.after_crlf = line.ends_with(b"\r\n");
        if data.buf.len() + body.len() > self.policy.max_message_size {
            data.too_big = true;
        } else {
            data.buf.extend_from_slice(body);
        }
        Response::none()
    }

    fn end_of_data(&mut self) -> Response {
        let Mode::Data(data) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return Response::none();
        };
        self.policy.observer.message_ended();
        let delay = self.delay(Stage::Message);
        let Some(tx) = self.tx.take() else {
            return self.error(503, "5.5.1", "no transaction");
        };
        if data.too_big {
            return Response::reply(552, "5.3.4", "message size exceeds the fixed limit")
                .delayed(delay);
        }
        if let Some(response) = self.scripted_disconnect(Stage::Message) {
            return response;
        }
        if data.overlong {
            return Response::reply(550, "5.6.0", "message has a line longer than 998 octets")
                .delayed(delay);
        }
        for rule in tx.rules.iter().flatten() {
            match &rule.action {
                Action::Drop => return Response::none().delayed(delay).then(After::Drop),
                Action::Disconnect {
                    at: Stage::Message,
                    reply,
                } => {
                    return Response::reply(reply.code, &reply.enhanced, &reply.text)
                        .delayed(delay)
                        .then(After::Close);
                }
                Action::Reject {
                    at: Stage::Message,
                    reply,
                } => {
                    return Response::reply(reply.code, &reply.enhanced, &reply.text)
                        .delayed(delay);
                }
                Action::Hang { at: Stage::Message } => {
                    return Response::none().delayed(delay).then(After::Hang);
                }
                _ => {}
            }
        }
        let freeze_after = self.policy.script.session.freeze_after_messages;
        if !self.policy.observer.may_accept(freeze_after) {
            return Response::none().then(After::Hang);
        }
        let feedback = tx
            .rcpts
            .iter()
            .zip(&tx.rules)
            .zip(&tx.rcpt_dsn)
            .filter_map(|((rcpt, rule), params)| {
                let kind = match rule.as_ref().map(|r| &r.action) {
                    Some(Action::Bounce { status, diagnostic }) => FeedbackReport::Dsn {
                        status: status.clone(),
                        diagnostic: diagnostic.clone(),
                    },
                    Some(Action::Complain { feedback_type }) => FeedbackReport::Arf {
                        feedback_type: feedback_type.clone(),
                    },
                    // Delivered to the Maildir: a DSN-speaking MTA reports success when asked.
                    _ if params.wants_success() => FeedbackReport::Delivered,
                    _ => return None,
                };
                Some(Feedback {
                    rcpt: rcpt.clone(),
                    kind,
                    envid: tx.dsn.envid.clone(),
                    orcpt: params.orcpt.clone(),
                })
            })
            .collect();
        let id = self.policy.next_id();
        self.messages += 1;
        let mut response =
            Response::reply(250, "2.0.0", &format!("Ok: queued as {id}")).delayed(delay);
        // The scripted misreplies of `accept` rules: the message is stored all the same.
        let accepts = tx
            .rules
            .iter()
            .flatten()
            .filter_map(|rule| match &rule.action {
                Action::Accept { raw_reply, inject } => Some((raw_reply, inject)),
                _ => None,
            });
        let mut injected = String::new();
        for (raw_reply, inject) in accepts {
            if let Some(raw) = raw_reply {
                raw.clone_into(&mut response.reply);
            }
            if let Some(inject) = inject {
                injected.push_str(inject);
            }
        }
        response.reply.push_str(&injected);
        response.accepted = Some(Accepted {
            id,
            mail_from: tx.from,
            rcpts: tx.rcpts,
            data: data.buf,
            feedback,
            ret: tx.dsn.ret,
            envid: tx.dsn.envid,
            rcpt_dsn: tx.rcpt_dsn,
        });
        response
    }
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn decode(b64: &[u8]) -> Option<String> {
    BASE64
        .decode(b64)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Splits `FROM:<path> params` into the address (source route dropped) and the parameters.
fn parse_path(args: &str, keyword: &str) -> Result<(String, String), &'static str> {
    let head = args.get(..keyword.len()).unwrap_or("");
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(if keyword == "FROM:" {
            "syntax: MAIL FROM:<address>"
        } else {
            "syntax: RCPT TO:<address>"
        });
    }
    let rest = args[keyword.len()..].trim_start();
    let Some(rest) = rest.strip_prefix('<') else {
        return Err("the address must be in angle brackets");
    };
    let Some(end) = rest.find('>') else {
        return Err("missing closing angle bracket");
    };
    let mut path = &rest[..end];
    // RFC 5321 §4.1.2 allows an obsolete source route "@a,@b:user@d"; only the mailbox counts.
    if path.starts_with('@') {
        path = path.split_once(':').map(|(_, m)| m).unwrap_or("");
    }
    Ok((path.to_owned(), rest[end + 1..].to_owned()))
}

fn check_address(address: &str, smtputf8: bool) -> Result<(), (u16, &'static str, &'static str)> {
    if address.len() > 254 {
        return Err((501, "5.1.3", "address too long"));
    }
    if address.eq_ignore_ascii_case("postmaster") {
        return Ok(());
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err((501, "5.1.3", "bad address syntax: no @"));
    };
    if local.is_empty() || domain.is_empty() || local.len() > 64 {
        return Err((501, "5.1.3", "bad address syntax"));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((
            501,
            "5.1.3",
            "bad address syntax: spaces or control characters",
        ));
    }
    if !address.is_ascii() && !smtputf8 {
        return Err((553, "5.6.7", "non-ASCII address needs SMTPUTF8"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sandbox::script::Script;
    use std::sync::Arc;

    fn policy(script: &str, auth: bool) -> Arc<Policy> {
        Arc::new(Policy::new(
            "sandbox.test",
            true,
            auth.then(|| ("user".to_owned(), "secret".to_owned())),
            Script::parse(script).unwrap(),
        ))
    }

    fn feed(s: &mut Session, line: &str) -> Response {
        s.feed(format!("{line}\r\n").as_bytes())
    }

    fn code(s: &mut Session, line: &str) -> u16 {
        feed(s, line).code()
    }

    /// A session on the implicit-TLS side, greeted and (when auth is on) authenticated.
    fn ready(policy: &Arc<Policy>) -> Session {
        let mut s = Session::new(policy.clone(), true);
        assert_eq!(s.greeting().code(), 220);
        assert_eq!(code(&mut s, "EHLO client.test"), 250);
        if policy.auth.is_some() {
            let plain = BASE64.encode(b"\0user\0secret");
            assert_eq!(code(&mut s, &format!("AUTH PLAIN {plain}")), 235);
        }
        s
    }

    fn send(s: &mut Session, lines: &[&str]) -> Response {
        assert_eq!(code(s, "DATA"), 354);
        for line in lines {
            assert_eq!(feed(s, line).reply, "");
        }
        feed(s, ".")
    }

    #[test]
    fn ehlo_advertises_starttls_before_tls_and_auth_only_after() {
        let p = policy("", true);
        let mut plain = Session::new(p.clone(), false);
        plain.greeting();
        let r = feed(&mut plain, "EHLO c");
        assert!(r.reply.contains("250-STARTTLS\r\n") || r.reply.contains("250 STARTTLS\r\n"));
        assert!(!r.reply.contains("AUTH"));
        for ext in [
            "PIPELINING",
            "SIZE 10485760",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ] {
            assert!(r.reply.contains(ext), "{ext} missing from {:?}", r.reply);
        }
        assert_eq!(code(&mut plain, "AUTH PLAIN AHVzZXIAc2VjcmV0"), 538);
        assert_eq!(code(&mut plain, "MAIL FROM:<a@b.c>"), 530);
        let r = feed(&mut plain, "STARTTLS");
        assert_eq!((r.code(), r.after), (220, After::StartTls));
        plain.tls_started();
        assert_eq!(
            code(&mut plain, "MAIL FROM:<a@b.c>"),
            503,
            "EHLO again after TLS"
        );
        let r = feed(&mut plain, "EHLO c");
        assert!(r.reply.contains("AUTH PLAIN LOGIN"));
        assert!(!r.reply.contains("STARTTLS"));
    }

    #[test]
    fn auth_login_and_wrong_password_and_redacted_transcript() {
        let p = policy("", true);
        let mut s = Session::new(p.clone(), true);
        s.greeting();
        code(&mut s, "EHLO c");
        assert_eq!(code(&mut s, "AUTH LOGIN"), 334);
        assert_eq!(code(&mut s, &BASE64.encode("user")), 334);
        assert_eq!(code(&mut s, &BASE64.encode("wrong")), 535);
        assert_eq!(code(&mut s, "AUTH LOGIN"), 334);
        assert_eq!(code(&mut s, &BASE64.encode("user")), 334);
        assert_eq!(code(&mut s, &BASE64.encode("secret")), 235);
        let transcript = p.transcript().join("\n");
        assert!(!transcript.contains(&BASE64.encode("secret")));
        assert!(!transcript.contains(&BASE64.encode("user")));
        assert!(transcript.contains("AUTH LOGIN\n<redacted>\n<redacted>"));
    }

    #[test]
    fn xoauth2_accepts_the_token_and_refuses_others_like_gmail() {
        let mut policy = Policy::new(
            "sandbox.test",
            true,
            Some(("user".to_owned(), "secret".to_owned())),
            Script::accept_all(),
        );
        policy.xoauth2_token = Some("tok-1".into());
        let p = Arc::new(policy);
        let response = |user: &str, token: &str| {
            BASE64.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
        };
        let mut s = Session::new(p.clone(), true);
        s.greeting();
        assert!(
            feed(&mut s, "EHLO c")
                .reply
                .contains("AUTH PLAIN LOGIN XOAUTH2")
        );
        let refused = feed(
            &mut s,
            &format!("AUTH XOAUTH2 {}", response("user", "tok-2")),
        );
        let challenge = refused.reply.strip_prefix("334 ").unwrap().trim_end();
        let json = BASE64.decode(challenge).unwrap();
        assert!(
            String::from_utf8(json)
                .unwrap()
                .contains("\"status\":\"400\"")
        );
        assert_eq!(code(&mut s, ""), 535);
        assert_eq!(code(&mut s, "MAIL FROM:<a@b.test>"), 530);
        // Right token, wrong user: refused too.
        assert_eq!(
            code(
                &mut s,
                &format!("AUTH XOAUTH2 {}", response("other", "tok-1"))
            ),
            334
        );
        assert_eq!(code(&mut s, ""), 535);
        // Without the initial response the server asks for it.
        assert_eq!(code(&mut s, "AUTH XOAUTH2"), 334);
        assert_eq!(code(&mut s, &response("user", "tok-1")), 235);
        assert_eq!(code(&mut s, "MAIL FROM:<a@b.test>"), 250);
        assert!(!p.transcript().join("\n").contains("tok-"));
    }

    #[test]
    fn xoauth2_is_not_offered_without_a_token() {
        let p = policy("", true);
        let mut s = Session::new(p, true);
        s.greeting();
        assert!(!feed(&mut s, "EHLO c").reply.contains("XOAUTH2"));
        assert_eq!(code(&mut s, "AUTH XOAUTH2 eA=="), 504);
    }

    #[test]
    fn bad_sequences_get_503_and_too_many_errors_close() {
        let p = policy("", false);
        let mut s = Session::new(p, false);
        s.greeting();
        assert_eq!(code(&mut s, "MAIL FROM:<a@b.c>"), 503);
        assert_eq!(code(&mut s, "RCPT TO:<a@b.c>"), 503);
        assert_eq!(code(&mut s, "DATA"), 503);
        code(&mut s, "HELO c");
        assert_eq!(code(&mut s, "MAIL FROM:<a@b.c>"), 250);
        assert_eq!(code(&mut s, "MAIL FROM:<a@b.c>"), 503);
        assert_eq!(code(&mut s, "DATA"), 503);
        assert_eq!(code(&mut s, "RCPT TO:a@b.c"), 501);
        assert_eq!(code(&mut s, "RCPT TO:<a@b.c> NOTIFY=NEVER"), 555);
        assert_eq!(code(&mut s, "XYZZY"), 500);
        assert_eq!(code(&mut s, &"NOOP".repeat(200)), 500);
        let mut last = Response::none();
        for _ in 0..MAX_ERRORS {
            last = feed(&mut s, "BOGUS");
            if last.after == After::Close {
                break;
            }
        }
        assert_eq!((last.code(), last.after), (421, After::Close));
    }

    #[test]
    fn dot_unstuffing_and_crlf_dot_crlf_only_after_crlf() {
        let p = policy("", false);
        let mut s = ready(&p);
        code(&mut s, "MAIL FROM:<a@b.c>");
        code(&mut s, "RCPT TO:<x@y.z>");
        assert_eq!(code(&mut s, "DATA"), 354);
        let mut last = Response::none();
        for line in [
            &b"Subject: t\r\n"[..],
            b"\r\n",
            b"..leading dot\r\n",
            b"bare lf\n",
            b".\r\n",
            b".\r\n",
        ] {
            last = s.feed(line);
        }
        // After the bare-LF line, ".\r\n" is message text (no smuggled end); the next one ends it.
        assert!(!s.in_data());
        assert_eq!(
            last.accepted.unwrap().data,
            b"Subject: t\r\n\r\n.leading dot\r\nbare lf\n.\r\n"
        );
        let p2 = policy("", false);
        let mut s2 = ready(&p2);
        code(&mut s2, "MAIL FROM:<a@b.c>");
        code(&mut s2, "RCPT TO:<x@y.z>");
        let r = send(&mut s2, &["A", "..B", ".C", ""]);
        let accepted = r.accepted.unwrap();
        assert_eq!(accepted.data, b"A\r\n.B\r\nC\r\n\r\n");
        assert_eq!(accepted.rcpts, vec!["x@y.z"]);
        assert!(
            accepted
                .maildir_bytes()
                .starts_with(b"Return-Path: <a@b.c>\r\nDelivered-To: x@y.z\r\nA\r\n")
        );
    }

    #[test]
    fn size_limits() {
        let p = policy("", false);
        let mut s = ready(&p);
        assert_eq!(code(&mut s, "MAIL FROM:<a@b.c> SIZE=999999999999"), 552);
        assert_eq!(
            code(&mut s, "MAIL FROM:<a@b.c> SIZE=100 BODY=8BITMIME"),
            250
        );
        code(&mut s, "RCPT TO:<x@y.z>");
        code(&mut s, "DATA");
        assert_eq!(s.overlong().reply, "");
        let r = feed(&mut s, ".");
        assert_eq!(r.code(), 550);
        assert!(r.accepted.is_none());
    }

    #[test]
    fn script_rules_at_rcpt_data_and_message() {
        let p = policy(
            r#"
            [[rule]]
            recipient = "hard@x"
            action = "reject"
            reply = "550 5.1.1 no such user"
            [[rule]]
            recipient = "full@x"
            action = "reject"
            reply = "552 5.2.2 mailbox full"
            at = "message"
            [[rule]]
            recipient = "grey@x"
            action = "greylist"
            attempts = 2
            [[rule]]
            recipient = "bye@x"
            action = "disconnect"
            [[rule]]
            recipient = "drop@x"
            action = "drop"
            [[rule]]
            recipient = "dsn@x"
            action = "bounce"
            [[rule]]
            recipient = "arf@x"
            action = "complain"
            [[rule]]
            recipient = "slow@x"
            action = "accept"
            delay_ms = 250
            "#,
            false,
        );
        let mut s = ready(&p);
        code(&mut s, "MAIL FROM:<a@b.c>");
        assert_eq!(
            feed(&mut s, "RCPT TO:<hard@x>").reply,
            "550 5.1.1 no such user\r\n"
        );
        assert_eq!(code(&mut s, "RCPT TO:<grey@x>"), 450);
        assert_eq!(code(&mut s, "RCPT TO:<grey@x>"), 450);
        assert_eq!(code(&mut s, "RCPT TO:<grey@x>"), 250);
        assert_eq!(
            feed(&mut s, "RCPT TO:<slow@x>").delay,
            Duration::from_millis(250)
        );
        assert_eq!(code(&mut s, "RCPT TO:<dsn@x>"), 250);
        assert_eq!(code(&mut s, "RCPT TO:<arf@x>"), 250);
        let r = send(&mut s, &["Subject: hi", "", "body"]);
        assert_eq!(r.code(), 250);
        let feedback = r.accepted.unwrap().feedback;
        assert_eq!(feedback.len(), 2);
        assert_eq!(feedback[0].rcpt, "dsn@x");
        assert!(matches!(feedback[1].kind, FeedbackReport::Arf { .. }));

        code(&mut s, "MAIL FROM:<a@b.c>");
        code(&mut s, "RCPT TO:<full@x>");
        let r = send(&mut s, &["x"]);
        assert_eq!(r.reply, "552 5.2.2 mailbox full\r\n");
        assert!(r.accepted.is_none());

        code(&mut s, "MAIL FROM:<a@b.c>");
        code(&mut s, "RCPT TO:<drop@x>");
        let r = send(&mut s, &["x"]);
        assert_eq!((r.reply.as_str(), r.after), ("", After::Drop));

        let mut s = ready(&p);
        code(&mut s, "MAIL FROM:<a@b.c>");
        let r = feed(&mut s, "RCPT TO:<bye@x>");
        assert_eq!((r.code(), r.after), (421, After::Close));
    }

    #[test]
    fn session_faults() {
        let p = policy(
            "[session]\nstarttls = false\nauth = \"fail\"\ndisconnect_after_messages = 1\n",
            true,
        );
        let mut s = Session::new(p.clone(), false);
        s.greeting();
        assert!(!feed(&mut s, "EHLO c").reply.contains("STARTTLS"));
        assert_eq!(code(&mut s, "STARTTLS"), 502);
        let mut s = Session::new(p, true);
        s.greeting();
        code(&mut s, "EHLO c");
        let plain = BASE64.encode(b"\0user\0secret");
        assert_eq!(code(&mut s, &format!("AUTH PLAIN {plain}")), 535);

        let p = policy("[session]\ndisconnect_after_messages = 1\n", false);
        let mut s = ready(&p);
        code(&mut s, "MAIL FROM:<a@b.c>");
        code(&mut s, "RCPT TO:<x@y.z>");
        assert_eq!(send(&mut s, &["x"]).code(), 250);
        let r = feed(&mut s, "MAIL FROM:<a@b.c>");
        assert_eq!((r.code(), r.after), (421, After::Close));

        for stage in ["ehlo", "mail", "rcpt", "data", "message"] {
            let p = policy(&format!("[session]\ndisconnect_at = \"{stage}\"\n"), false);
            let mut s = Session::new(p, true);
            s.greeting();
            let mut last = Response::none();
            for line in [
                "EHLO c",
                "MAIL FROM:<a@b.c>",
                "RCPT TO:<x@y.z>",
                "DATA",
                "x",
                ".",
            ] {
                last = feed(&mut s, line);
                if last.after == After::Close {
                    break;
                }
            }
            assert_eq!((last.code(), last.after), (421, After::Close), "at {stage}");
            assert!(last.accepted.is_none());
        }

        let p = policy("[session]\ngreeting = \"421 4.3.2 go away\"\n", false);
        let r = Session::new(p, false).greeting();
        assert_eq!(
            (r.reply.as_str(), r.after),
            ("421 4.3.2 go away\r\n", After::Close)
        );
        let p = policy("[session]\ngreeting = \"554 5.3.2 no service\"\n", false);
        let mut s = Session::new(p, false);
        assert_eq!(s.greeting().code(), 554);
        assert_eq!(code(&mut s, "EHLO c"), 503);
        assert_eq!(code(&mut s, "QUIT"), 221);
    }

    #[test]
    fn hang_sender_rules_and_misreplies() {
        let p = policy(
            r#"
            [session]
            pipelining = false
            [[rule]]
            sender = "bad*@*"
            action = "reject"
            reply = "553 5.7.1 not yours"
            [[rule]]
            sender = "mute*@*"
            action = "hang"
            [[rule]]
            recipient = "silentrcpt@x"
            action = "hang"
            [[rule]]
            recipient = "silentdata@x"
            action = "hang"
            at = "message"
            [[rule]]
            recipient = "dot354@x"
            action = "accept"
            raw_reply = "354 go ahead\r\n"
            [[rule]]
            recipient = "dup@x"
            action = "accept"
            inject = "250 2.0.0 stray\r\n"
            "#,
            false,
        );
        let mut s = Session::new(p.clone(), true);
        s.greeting();
        assert!(!feed(&mut s, "EHLO c").reply.contains("PIPELINING"));
        assert_eq!(
            feed(&mut s, "MAIL FROM:<bad-sender@b.c>").reply,
            "553 5.7.1 not yours\r\n"
        );
        let r = feed(&mut s, "MAIL FROM:<mute@b.c>");
        assert_eq!((r.reply.as_str(), r.after), ("", After::Hang));

        let mut s = ready(&p);
        code(&mut s, "MAIL FROM:<a@b.c>");
        let r = feed(&mut s, "RCPT TO:<silentrcpt@x>");
        assert_eq!((r.reply.as_str(), r.after), ("", After::Hang));

        let mut s = ready(&p);
        code(&mut s, "MAIL FROM:<a@b.c>");
        code(&mut s, "RCPT TO:<silentdata@x>");
        let r = send(&mut s, &["x"]);
        assert_eq!((r.reply.as_str(), r.after), ("", After::Hang));
        assert!(r.accepted.is_none());

        code(&mut s, "MAIL FROM:<a@b.c>");
        code(&mut s, "RCPT TO:<dot354@x>");
        let r = send(&mut s, &["x"]);
        assert_eq!(r.reply, "354 go ahead\r\n");
        assert!(r.accepted.is_some(), "stored all the same");

        code(&mut s, "MAIL FROM:<a@b.c>");
        code(&mut s, "RCPT TO:<dup@x>");
        let r = send(&mut s, &["x"]);
        assert!(
            r.reply.starts_with("250 2.0.0 Ok: queued as SBX"),
            "{}",
            r.reply
        );
        assert!(r.reply.ends_with("\r\n250 2.0.0 stray\r\n"), "{}", r.reply);
        // Every final "." counted, answered or not.
        assert_eq!(p.observer.seen().messages_ended, 3);
    }

    #[test]
    fn inject_sessions_limits_injection_to_the_first_sessions() {
        let p = policy(
            "[session]\ninject = { mail = \"250 2.1.0 extra\\r\\n\" }\ninject_sessions = 1\n",
            false,
        );
        let mut first = ready(&p);
        assert_eq!(
            feed(&mut first, "MAIL FROM:<a@b.c>").reply,
            "250 2.1.0 Ok\r\n250 2.1.0 extra\r\n"
        );
        let mut second = ready(&p);
        assert_eq!(
            feed(&mut second, "MAIL FROM:<a@b.c>").reply,
            "250 2.1.0 Ok\r\n"
        );
    }

    #[test]
    fn freeze_after_messages_counts_every_session_until_thawed() {
        let p = policy("[session]\nfreeze_after_messages = 1\n", false);
        let message = |p: &Arc<Policy>| {
            let mut s = ready(p);
            code(&mut s, "MAIL FROM:<a@b.c>");
            code(&mut s, "RCPT TO:<x@y.z>");
            send(&mut s, &["x"])
        };
        assert_eq!(message(&p).code(), 250);
        let frozen = message(&p);
        assert_eq!((frozen.reply.as_str(), frozen.after), ("", After::Hang));
        p.observer.thaw();
        assert_eq!(message(&p).code(), 250);
        assert_eq!(p.observer.seen().sessions, 3);
    }

    #[test]
    fn utf8_addresses_need_smtputf8() {
        let p = policy("", false);
        let mut s = ready(&p);
        assert_eq!(code(&mut s, "MAIL FROM:<jöran@b.c>"), 553);
        assert_eq!(code(&mut s, "MAIL FROM:<jöran@b.c> SMTPUTF8"), 250);
        assert_eq!(code(&mut s, "RCPT TO:<пример@почта.рф>"), 250);
    }
}
