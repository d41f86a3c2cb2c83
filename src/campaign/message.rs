//! Renders one contact into a complete RFC 5322 message. lettre encodes every piece (RFC 2047
//! header words, quoted display names, folding, quoted-printable/base64 bodies, CRLF line
//! ends); this module writes the pieces in lettre's order itself instead of going through
//! `MessageBuilder`, which re-parses what it was just given (From, Date, the multipart
//! boundary) and cost ~40 % of a render. Header lines that do not depend on the contact are
//! formatted once per campaign ([`Fixed`]). It also owns the 998-octet check and the
//! header-safety rule: a rendered value that would put a control character into a header
//! rejects the row; it is never written. No I/O here.

use std::time::SystemTime;

use handlebars::Context;
use lettre::Address;
use lettre::message::header::{self, HeaderName, HeaderValue, Headers};
use lettre::message::{Mailbox, Mailboxes};
use serde_json::{Map, Value as Json};

use super::address::control_char_problem;
use super::compiled::Lookup;
use super::contacts::Contact;
use super::encoding;
use super::template::{Escape, render_error};
use super::{BUILTIN_VARIABLES, Campaign, Error, Rendered, recipient_token};

/// Longest rendered unsubscribe URL accepted: it must fit one header line (998 octets).
const MAX_URL: usize = 900;

impl Campaign {
    fn row_error(&self, contact: &Contact, reason: String) -> Error {
        Error::Row {
            path: self.config().contacts.path.clone(),
            line: contact.line,
            reason,
        }
    }

    fn render_plain(&self, name: &str, scope: &mut Scope<'_>) -> Result<String, Error> {
        self.render_in(Escape::None, name, scope)
    }

    fn render_html(&self, name: &str, scope: &mut Scope<'_>) -> Result<String, Error> {
        self.render_in(Escape::Html, name, scope)
    }

    fn render_uri(&self, name: &str, scope: &mut Scope<'_>) -> Result<String, Error> {
        self.render_in(Escape::UriComponent, name, scope)
    }

    /// Renders template `name` directly when it is compiled (see `compiled`), else, or when a
    /// value is missing, with Handlebars into a buffer sized for a message part
    /// (`render_with_context` would allocate 8 KiB for every value, a subject as much as a
    /// body).
    fn render_in(
        &self,
        escape: Escape,
        name: &str,
        scope: &mut Scope<'_>,
    ) -> Result<String, Error> {
        if let Some(out) = self.templates.render_direct(escape, name, scope) {
            return Ok(out);
        }
        let contact = scope.contact;
        let mut out = Vec::with_capacity(512);
        self.templates
            .registry(escape)
            .render_with_context_to_write(name, scope.context(), &mut out)
            .map_err(|e| self.row_error(contact, render_error(&e, name, contact.line)))?;
        // Handlebars writes only `&str` pieces, so this never fails.
        String::from_utf8(out).map_err(|e| {
            self.row_error(
                contact,
                format!("line {}: template `{name}` failed: {e}", contact.line),
            )
        })
    }

    /// Rejects `value`, rendered from `template` for header `what`, if it holds a control
    /// character, naming the column it came from: first among the columns the template uses.
    fn header_safe(
        &self,
        contact: &Contact,
        what: &dyn std::fmt::Display,
        template: &str,
        value: &str,
    ) -> Result<(), Error> {
        let Some(problem) = control_char_problem(value) else {
            return Ok(());
        };
        let culprit = |(_, v): &(&String, &String)| control_char_problem(v) == Some(problem);
        let used = self.names.mentions.get(template);
        let origin = contact
            .fields
            .iter()
            .filter(|(k, _)| used.is_some_and(|u| u.contains(k.as_str())))
            .find(culprit)
            .or_else(|| contact.fields.iter().find(culprit))
            .map_or_else(
                || "from the template text".to_owned(),
                |(k, _)| format!("from column `{k}`"),
            );
        Err(self.row_error(
            contact,
            format!(
                "line {}: the {what} would contain {problem} ({origin})",
                contact.line
            ),
        ))
    }

    /// The files `[contacts] attachment_column` names for this row, each checked (see
    /// `attach::confine`); a bad one rejects the row at its line.
    fn row_attachments(&self, contact: &Contact) -> Result<Vec<super::AttachmentFile>, Error> {
        let Some(column) = &self.config().contacts.attachment_column else {
            return Ok(Vec::new());
        };
        let value = contact.fields.get(column).map_or("", String::as_str);
        value
            .split(';')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|written| {
                super::attach::confine(&self.root, written).map_err(|reason| {
                    self.row_error(
                        contact,
                        format!(
                            "line {}: attachment `{written}` (column `{column}`): {reason}",
                            contact.line
                        ),
                    )
                })
            })
            .collect()
    }

    /// Builds the message for `contact` with `date` as its Date header, signed with `[dkim]`'s
    /// keys: the signatures cover exactly these bytes, which are what is sent.
    pub fn render_at(&self, contact: &Contact, date: SystemTime) -> Result<Rendered, Error> {
        let rendered = self.render_unsigned_at(contact, date)?;
        self.sign(rendered)
    }

    /// A copy of `contact`'s message for someone who is not a recipient (a test send or a seed,
    /// see `store::test_sends`): the same bodies, headers and attachments, but addressed to
    /// `copy.to`, with `copy.subject_prefix` before the subject, and its own Message-ID and
    /// token (`copy.id`: in `{{token}}`, the unsubscribe URL and the VERP return path), so that
    /// an unsubscribe click, a reply or a bounce of the copy can never be taken for the
    /// recipient's.
    ///
    /// # Errors
    /// As `render_at`, and when `copy.to` is not a valid address.
    pub fn render_copy(
        &self,
        contact: &Contact,
        copy: &Copy<'_>,
        date: SystemTime,
    ) -> Result<Rendered, Error> {
        let rendered = self
            .build(contact, date, true, Some(copy))?
            .expect("a built message when bodies are rendered");
        // Signed like the real message: a test send shows what the recipients will get.
        self.sign(rendered)
    }

    /// Adds the DKIM signatures of `[dkim]` (none without it).
    fn sign(&self, mut rendered: Rendered) -> Result<Rendered, Error> {
        if let Some(signer) = self.signer() {
            // Signing belongs after the last byte is written: any later change breaks it.
            rendered.bytes = signer
                .sign(std::mem::take(&mut rendered.bytes))
                .map_err(|error| Error::Dkim {
                    path: self.config_path().to_owned(),
                    error,
                })?;
        }
        Ok(rendered)
    }

    /// [`Campaign::render_at`] without the DKIM signatures (for `check`, which measures and
    /// validates every row and signs one).
    pub fn render_unsigned_at(
        &self,
        contact: &Contact,
        date: SystemTime,
    ) -> Result<Rendered, Error> {
        self.build(contact, date, true, None)
            .map(|built| built.expect("a built message when bodies are rendered"))
    }

    /// Fails exactly when [`Campaign::render_at`] would for this row, without building the
    /// bodies when their templates cannot fail for one row and not another
    /// ([`Campaign::bodies_vary_by_row`]): the unsubscribe URL and mailto, the subject, the custom
    /// headers and the whole header section are built and checked; the bodies are rendered only
    /// when `render_bodies` or when they depend on the row.
    ///
    /// # Errors
    /// As `render_at`.
    pub fn check_row(&self, contact: &Contact, render_bodies: bool) -> Result<(), Error> {
        let bodies = render_bodies || self.bodies_vary_by_row();
        self.build(contact, SystemTime::UNIX_EPOCH, bodies, None)
            .map(drop)
    }

    /// Whether a body template can fail to render for one row and not another. Every value is a
    /// string and every row has every column, so only templates that look up names taken from
    /// a value (the `lookup` helper, a partial whose name is computed) can; for all others a
    /// body renders for every row if it renders for one.
    pub fn bodies_vary_by_row(&self) -> bool {
        self.bodies_vary
    }

    /// The message for `contact`; `None` when `bodies` is false (then only the headers were
    /// built and checked).
    fn build(
        &self,
        contact: &Contact,
        date: SystemTime,
        bodies: bool,
        copy: Option<&Copy<'_>>,
    ) -> Result<Option<Rendered>, Error> {
        let name = self.name();
        let token = recipient_token(name, &contact.email);
        // What identifies the message outside: the recipient's token, or the copy's own id.
        let own_token = copy.map_or(token.as_str(), |c| c.id);
        let mut scope = Scope {
            contact,
            campaign: name,
            token: own_token,
            unsubscribe_url: String::new(),
            context: None,
        };

        let mut list_unsubscribe = None;
        if let Some(names) = &self.names.unsubscribe {
            let url = self.render_uri(&names.url, &mut scope)?;
            self.header_safe(contact, &"unsubscribe URL", &names.url, &url)?;
            let url = uri_escape(url.trim());
            if url.len() > MAX_URL {
                return Err(self.row_error(
                    contact,
                    format!(
                        "line {}: the unsubscribe URL is {} characters long (at most {MAX_URL})",
                        contact.line,
                        url.len()
                    ),
                ));
            }
            let mut header = String::with_capacity(url.len() + 2);
            header.push('<');
            header.push_str(&url);
            header.push('>');
            if let Some(mailto) = &names.mailto {
                let m = self.render_uri(mailto, &mut scope)?;
                self.header_safe(contact, &"unsubscribe mailto", mailto, &m)?;
                let m = m.trim();
                let m = m.strip_prefix("mailto:").unwrap_or(m);
                header.push_str(", <mailto:");
                header.push_str(&uri_escape(m));
                header.push('>');
            }
            scope.set_unsubscribe_url(url);
            list_unsubscribe = Some(header);
        }

        let mut subject = self.render_plain(&self.names.subject, &mut scope)?;
        self.header_safe(contact, &"subject", &self.names.subject, &subject)?;
        if let Some(c) = copy {
            subject.insert_str(0, c.subject_prefix);
        }

        let to_addr: Address = copy
            .map_or(contact.email.as_str(), |c| c.to)
            .parse()
            .map_err(|e| {
                self.row_error(
                    contact,
                    format!("line {}: invalid address: {e}", contact.line),
                )
            })?;
        let message_id = self.message_id(own_token);
        let mut customs = Vec::with_capacity(self.names.headers.len());
        for (header, template) in &self.names.headers {
            let value = self.render_plain(template, &mut scope)?;
            self.header_safe(contact, &format_args!("header {header}"), template, &value)?;
            customs.push(encode_header(header.clone(), value));
        }

        // Per-row files are checked for every row, bodies or not: a path that is missing or
        // leaves the campaign folder rejects the row at its line. So is a contact's own zone.
        let row_files = self.row_attachments(contact)?;
        if let Some(column) = &self.config().contacts.timezone_column
            && let Some(zone) = contact.fields.get(column).map(|z| z.trim())
            && !zone.is_empty()
            && let Err(reason) = crate::schedule::zone(zone)
        {
            return Err(self.row_error(
                contact,
                format!(
                    "line {}: column `{column}`: {reason}; fix it or leave it empty for the [schedule] zone",
                    contact.line
                ),
            ));
        }

        let (text, html) = match &self.names.body {
            _ if !bodies => (None, None),
            Body::Parts { text, html } => {
                let text = match text {
                    Some(t) => Some(self.render_plain(t, &mut scope)?),
                    None => None,
                };
                let html = match html {
                    Some(h) => Some(self.render_html(h, &mut scope)?),
                    None => None,
                };
                // An HTML-only campaign still gets a text part (spam filters and text-only
                // readers expect one), unless the user opted out.
                let text = match (text, &html) {
                    (None, Some(h)) if self.config().campaign.generate_text => {
                        Some(super::html_text::to_text(h))
                    }
                    (text, _) => text,
                };
                (text, html)
            }
            Body::Markdown(m) => {
                // Values are inert text in the Markdown source (see `template::markdown_text`):
                // a contact's name cannot become a link or a remote image.
                let source_html = self.render_in(Escape::Markdown, m, &mut scope)?;
                let mut html = String::with_capacity(source_html.len() * 3 / 2);
                pulldown_cmark::html::push_html(
                    &mut html,
                    pulldown_cmark::Parser::new_ext(&source_html, pulldown_cmark::Options::all()),
                );
                (Some(self.render_plain(m, &mut scope)?), Some(html))
            }
        };
        if bodies && text.is_none() && html.is_none() {
            return Err(self.row_error(contact, "no body template".into()));
        }

        let fixed = &self.fixed;
        // The encoded attachments are shared; each message copies them once, into a buffer
        // sized for them (growing it would hold two copies for a moment).
        let mut parts: Vec<std::sync::Arc<[u8]>> = Vec::new();
        if bodies {
            parts.extend(self.attachments.iter().map(|(_, part)| part.clone()));
            for file in &row_files {
                parts.push(self.row_parts.get(file).map_err(|e| {
                    self.row_error(
                        contact,
                        format!(
                            "line {}: attachment `{}` cannot be read: {e}",
                            contact.line, file.written
                        ),
                    )
                })?);
            }
        }
        let attached: usize = parts.iter().map(|p| p.len() + 64).sum();
        let size =
            1024 + text.as_ref().map_or(0, String::len) + html.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(size + size / 4 + attached);
        // The order is the one lettre's builder produced, so messages stay byte-identical.
        let mut headers = Headers::with_capacity(4);
        out.extend_from_slice(fixed.from.as_bytes());
        let to_name = if copy.is_some() {
            None
        } else {
            contact.name.as_deref()
        };
        put_to(&mut out, &mut headers, to_name, to_addr);
        if verbatim("Subject", &[&subject]) {
            put_line(&mut out, "Subject", &subject);
        } else {
            headers.insert_raw(header_value("Subject", subject));
            put(&mut out, &mut headers);
        }
        put_date(&mut out, date);
        put_value(
            &mut out,
            &mut headers,
            "Message-ID",
            &["<", &message_id, ">"],
        );
        out.extend_from_slice(fixed.reply_to.as_bytes());
        // `insert_raw` replaces a header of the same name (case-insensitive) in place, as the
        // builder did for `X-A` and `x-a` in [campaign.headers].
        for value in customs {
            headers.insert_raw(value);
        }
        put(&mut out, &mut headers);
        if let Some(v) = list_unsubscribe {
            put_value(&mut out, &mut headers, "List-Unsubscribe", &[&v]);
            out.extend_from_slice(fixed.unsubscribe_post.as_bytes());
        }
        out.extend_from_slice(fixed.list.as_bytes());
        out.extend_from_slice(fixed.campaign.as_bytes());
        put_value(&mut out, &mut headers, "X-Mailroom-Token", &[own_token]);
        out.extend_from_slice(fixed.mime_version.as_bytes());
        let header_end = out.len();
        let mixed = format!("=_mailroom_{own_token}_mixed");
        if !parts.is_empty() {
            put_value(
                &mut out,
                &mut headers,
                "Content-Type",
                &["multipart/mixed; boundary=\"", &mixed, "\""],
            );
            out.extend_from_slice(b"\r\n--");
            out.extend_from_slice(mixed.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match (text, html) {
            _ if !bodies => {}
            (Some(t), Some(h)) => {
                let boundary = format!("=_mailroom_{own_token}");
                put_value(
                    &mut out,
                    &mut headers,
                    "Content-Type",
                    &["multipart/alternative; boundary=\"", &boundary, "\""],
                );
                out.extend_from_slice(b"\r\n");
                for (content_type, body) in [(&fixed.text_type, t), (&fixed.html_type, h)] {
                    out.extend_from_slice(b"--");
                    out.extend_from_slice(boundary.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    put_part(&mut out, content_type, &body);
                }
                out.extend_from_slice(b"--");
                out.extend_from_slice(boundary.as_bytes());
                out.extend_from_slice(b"--\r\n");
            }
            (Some(t), None) => put_part(&mut out, &fixed.text_type, &t),
            (None, Some(h)) => put_part(&mut out, &fixed.html_type, &h),
            (None, None) => unreachable!("checked above"),
        }
        // Only the header section needs the check: every body encoding lettre chooses keeps
        // lines within 76 octets (7bit only when no line reaches 76; QP and base64 wrap at 76).
        debug_assert!(longest_line(&out[header_end..]).is_none_or(|l| l <= 76));
        // Attachment parts keep their lines within 78 octets (`attach::encode_part`).
        for part in &parts {
            out.extend_from_slice(b"--");
            out.extend_from_slice(mixed.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(part);
        }
        if !parts.is_empty() {
            out.extend_from_slice(b"--");
            out.extend_from_slice(mixed.as_bytes());
            out.extend_from_slice(b"--\r\n");
        }
        // No line can be longer than the whole header section, usually under 998 octets.
        let longest = if header_end > MAX_LINE {
            longest_line(&out[..header_end])
        } else {
            None
        };
        if let Some(len) = longest.filter(|l| *l > MAX_LINE) {
            // lettre folds only at spaces; anything it could not fold is refused, never sent.
            return Err(self.row_error(
                contact,
                format!(
                    "line {}: the message would contain a line of {len} octets (the limit is {MAX_LINE}); shorten the longest value without spaces",
                    contact.line
                ),
            ));
        }
        if !bodies {
            return Ok(None);
        }
        let envelope_from = match &self.config().bounces.return_path {
            Some(rp) => rp.replace("{token}", own_token),
            None => self.from.email.to_string(),
        };
        Ok(Some(Rendered {
            envelope_from,
            envelope_to: copy.map_or_else(|| contact.email.clone(), |c| c.to.to_owned()),
            message_id,
            token,
            bytes: out,
        }))
    }
}

/// Who a copy of a recipient's message goes to, and how it differs (see
/// [`Campaign::render_copy`]).
#[derive(Debug, Clone, Copy)]
pub struct Copy<'a> {
    /// The normalised address the copy is for.
    pub to: &'a str,
    /// Put before the subject, e.g. `"[TEST] "`; empty for none.
    pub subject_prefix: &'a str,
    /// The copy's own token (letters, digits, `-`): its Message-ID, X-Mailroom-Token and VERP
    /// return path use it instead of the recipient's.
    pub id: &'a str,
}

/// The variables one message renders with: the row's columns and the built-ins
/// ([`BUILTIN_VARIABLES`], which shadow columns of the same name). The Handlebars context is
/// built only if a template needs Handlebars.
struct Scope<'a> {
    contact: &'a Contact,
    campaign: &'a str,
    token: &'a str,
    /// Empty until the unsubscribe URL is rendered (templates can test `{{#if unsubscribe_url}}`).
    unsubscribe_url: String,
    context: Option<Context>,
}

impl Scope<'_> {
    fn set_unsubscribe_url(&mut self, url: String) {
        if let Some(Json::Object(map)) = self.context.as_mut().map(Context::data_mut) {
            map.insert("unsubscribe_url".into(), Json::String(url.clone()));
        }
        self.unsubscribe_url = url;
    }

    /// The same variables as a Handlebars context, built on first use.
    fn context(&mut self) -> &Context {
        let context = match self.context.take() {
            Some(context) => context,
            None => {
                let contact = self.contact;
                let mut vars = Map::with_capacity(contact.fields.len() + 5);
                // A column named like a built-in variable is shadowed by it: not copied at all.
                for (k, v) in &contact.fields {
                    if !BUILTIN_VARIABLES.contains(&k.as_str()) {
                        vars.insert(k.clone(), Json::String(v.clone()));
                    }
                }
                for name in BUILTIN_VARIABLES {
                    let value = self.get(name).unwrap_or_default().to_owned();
                    vars.insert((*name).into(), Json::String(value));
                }
                Context::from(Json::Object(vars))
            }
        };
        self.context.insert(context)
    }
}

impl Lookup for Scope<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "email" => Some(&self.contact.email),
            "name" => Some(self.contact.name.as_deref().unwrap_or("")),
            "campaign" => Some(self.campaign),
            // A copy's own token in links too: its unsubscribe link must not be the
            // recipient's (one click in a test mailbox would unsubscribe them).
            "token" => Some(self.token),
            "unsubscribe_url" => Some(&self.unsubscribe_url),
            _ => self.contact.fields.get(name).map(String::as_str),
        }
    }
}

/// Header lines that are the same in every message of a campaign, formatted by lettre once.
#[derive(Debug, Clone)]
pub(crate) struct Fixed {
    from: String,
    /// Empty without `reply_to`.
    reply_to: String,
    unsubscribe_post: String,
    /// List-Id (RFC 2919) and, when configured, Feedback-ID.
    list: String,
    campaign: String,
    mime_version: String,
    text_type: String,
    html_type: String,
}

impl Fixed {
    pub(crate) fn new(
        from: &Mailbox,
        reply_to: Option<&Mailbox>,
        campaign: &str,
        list_id: &str,
        feedback_id: Option<&str>,
    ) -> Fixed {
        fn line(h: impl header::Header) -> String {
            let mut headers = Headers::new();
            headers.set(h);
            headers.to_string()
        }
        let raw = |name: &'static str, value: &str| {
            let mut headers = Headers::new();
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value.to_owned(),
            ));
            headers.to_string()
        };
        let mut list = raw("List-Id", list_id);
        if let Some(f) = feedback_id {
            list.push_str(&raw("Feedback-ID", f));
        }
        Fixed {
            from: line(header::From::from(Mailboxes::from(from.clone()))),
            reply_to: reply_to.map_or_else(String::new, |r| {
                line(header::ReplyTo::from(Mailboxes::from(r.clone())))
            }),
            unsubscribe_post: "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n".into(),
            list,
            campaign: {
                let mut headers = Headers::new();
                headers.insert_raw(HeaderValue::new(
                    HeaderName::new_from_ascii_str("X-Mailroom-Campaign"),
                    campaign.to_owned(),
                ));
                headers.to_string()
            },
            mime_version: line(header::MIME_VERSION_1_0),
            text_type: line(header::ContentType::TEXT_PLAIN),
            html_type: line(header::ContentType::TEXT_HTML),
        }
    }
}

/// Appends `headers` as lettre writes them ("Name: encoded\r\n" each) and empties it.
fn put(out: &mut Vec<u8>, headers: &mut Headers) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{headers}");
    headers.clear();
}

fn put_line(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Longest header line lettre writes without folding (email-encoding's `MAX_LINE_LEN`).
const FOLD_AT: usize = 76;

/// True when lettre's `HeaderValue::new` leaves the value made of `parts` as it is: all ASCII
/// without NUL, CR or LF (so no RFC 2047 encoded-word), and `name: value` fits 76 columns (so
/// no fold).
fn verbatim(name: &str, parts: &[&str]) -> bool {
    name.len() + 2 + parts.iter().map(|p| p.len()).sum::<usize>() <= FOLD_AT
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii() && !matches!(b, 0 | b'\r' | b'\n'))
        })
}

/// Appends the header whose value is `parts` joined, as lettre's `HeaderValue::new` encodes
/// it. Most values need no encoding; writing them directly spares three allocations each.
fn put_value(out: &mut Vec<u8>, headers: &mut Headers, name: &'static str, parts: &[&str]) {
    if verbatim(name, parts) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        for p in parts {
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    } else {
        headers.insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str(name),
            parts.concat(),
        ));
        put(out, headers);
    }
}

/// Appends the To header as lettre writes a mailbox: the display name bare when it is one
/// atom of letters, digits, `-_.`; quoted when it also has spaces; anything else (and any
/// name that could fold) goes through lettre.
fn put_to(out: &mut Vec<u8>, headers: &mut Headers, name: Option<&str>, addr: Address) {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let email: &str = addr.as_ref();
    match name {
        None => put_line(out, "To", email),
        Some(n) if n.bytes().all(plain) => {
            for p in ["To: ", n, " <", email, ">\r\n"] {
                out.extend_from_slice(p.as_bytes());
            }
        }
        // lettre can fold only inside the quoted name, after `To: "` (5 columns).
        Some(n) if 5 + n.len() <= FOLD_AT && n.bytes().all(|b| plain(b) || b == b' ') => {
            for p in ["To: \"", n, "\" <", email, ">\r\n"] {
                out.extend_from_slice(p.as_bytes());
            }
        }
        Some(n) => {
            headers.set(header::To::from(Mailboxes::from(Mailbox::new(
                Some(n.to_owned()),
                addr,
            ))));
            put(out, headers);
        }
    }
}

thread_local! {
    /// The last Date line formatted on this thread and its second: messages rendered in the
    /// same second share it.
    static DATE: std::cell::RefCell<(Option<u64>, Vec<u8>)> =
        const { std::cell::RefCell::new((None, Vec::new())) };
}

/// Appends the Date header as lettre writes it (RFC 5322 date, `+0000`).
fn put_date(out: &mut Vec<u8>, date: SystemTime) {
    let second = date
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs());
    DATE.with_borrow_mut(|(cached, line)| {
        if second.is_none() || *cached != second {
            let mut headers = Headers::new();
            headers.set(header::Date::new(date));
            line.clear();
            put(line, &mut headers);
            *cached = second;
        }
        out.extend_from_slice(line);
    });
}

/// Appends one MIME part: its Content-Type line, the encoding lettre would choose, the body.
fn put_part(out: &mut Vec<u8>, content_type: &str, body: &str) {
    use std::io::Write as _;
    let cte = encoding::choose(body);
    out.extend_from_slice(content_type.as_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(out, "Content-Transfer-Encoding: {cte}\r\n\r\n");
    encoding::push(out, cte, body);
    out.extend_from_slice(b"\r\n");
}

/// RFC 5322 §2.1.1: at most 998 octets per line, excluding CRLF.
const MAX_LINE: usize = 998;

/// Length of the longest line of `bytes`, without its CRLF.
fn longest_line(bytes: &[u8]) -> Option<usize> {
    let mut longest = None;
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            let end = if i > start && bytes[i - 1] == b'\r' {
                i - 1
            } else {
                i
            };
            longest = longest.max(Some(end - start));
            start = i + 1;
        }
    }
    longest.max(Some(bytes.len() - start))
}

fn header_value(name: &'static str, value: String) -> HeaderValue {
    encode_header(HeaderName::new_from_ascii_str(name), value)
}

/// lettre encodes only non-ASCII words and folds only at spaces, so a long ASCII word would
/// produce an over-long line. Such values are written as a run of RFC 2047 base64
/// encoded-words (each ≤ 75 chars, split on char boundaries) that decoders join losslessly.
fn encode_header(name: HeaderName, value: String) -> HeaderValue {
    // 76 keeps every folded line far below 998 even after the header name.
    if value.split_ascii_whitespace().all(|w| w.len() <= 76) {
        return HeaderValue::new(name, value);
    }
    use base64::Engine as _;
    // 39 input bytes → 52 base64 chars + 12 of `=?utf-8?b?…?=` = 64 ≤ 75 (RFC 2047 §2), so
    // even the first line, after "Subject: ", stays within the recommended 78.
    const CHUNK: usize = 39;
    let mut encoded = String::with_capacity(value.len() * 2);
    let mut chunk = String::with_capacity(CHUNK);
    let push = |chunk: &str, encoded: &mut String| {
        if !encoded.is_empty() {
            encoded.push_str("\r\n ");
        }
        encoded.push_str("=?utf-8?b?");
        encoded.push_str(&base64::engine::general_purpose::STANDARD.encode(chunk));
        encoded.push_str("?=");
    };
    for c in value.chars() {
        if chunk.len() + c.len_utf8() > CHUNK {
            push(&chunk, &mut encoded);
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        push(&chunk, &mut encoded);
    }
    HeaderValue::dangerous_new_pre_encoded(name, value, encoded)
}

/// Which templates make up the body.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Parts {
        text: Option<String>,
        html: Option<String>,
    },
    Markdown(String),
}

/// Template names by role.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// Header template name → variables it (with its partials) refers to, for error origins.
    pub(crate) mentions: std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    pub(crate) subject: String,
    pub(crate) headers: Vec<(HeaderName, String)>,
    pub(crate) unsubscribe: Option<UnsubscribeNames>,
    pub(crate) body: Body,
}

#[derive(Debug, Clone)]
pub(crate) struct UnsubscribeNames {
    pub(crate) url: String,
    pub(crate) mailto: Option<String>,
}

/// Percent-encodes what may not appear in a URI inside `<…>` (RFC 3986 §2; RFC 2369 §2):
/// spaces, angle brackets, quotes, controls and every non-ASCII byte.
fn uri_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic()
            && !matches!(
                b,
                b'<' | b'>' | b'"' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
        {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_line_ignores_crlf() {
        assert_eq!(longest_line(b"ab\r\ncde\r\n"), Some(3));
        assert_eq!(longest_line(b"abcd"), Some(4));
        assert_eq!(longest_line(b"a\nbc"), Some(2));
    }

    #[test]
    fn long_words_become_short_encoded_words() {
        let v = encode_header(
            HeaderName::new_from_ascii_str("Subject"),
            "é".repeat(30) + &"x".repeat(500),
        );
        let mut out = Vec::new();
        let m = lettre::Message::builder()
            .from("a@example.com".parse().unwrap_or_else(|_| unreachable!()))
            .to("b@example.com".parse().unwrap_or_else(|_| unreachable!()))
            .raw_header(v)
            .body(String::from("x"));
        if let Ok(m) = m {
            out = m.formatted();
        }
        assert!(!out.is_empty());
        assert!(
            longest_line(&out).is_some_and(|l| l <= 78),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let parsed = mail_parser::MessageParser::default().parse(&out);
        assert_eq!(
            parsed.as_ref().and_then(|p| p.subject()).map(str::to_owned),
            Some("é".repeat(30) + &"x".repeat(500))
        );
    }

    /// Header values around the fast paths' limits: fold points, quoting classes, non-ASCII.
    fn header_samples() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            "Li",
            "Ann Lee",
            "Ann  Lee ",
            " Ann",
            "O'Brien",
            "Zoë",
            "a.b-c_d",
            "Bob \"B\"",
            "tab\there",
            "semi;colon",
            "<x>",
            "x\u{7f}",
            "=?utf-8?q?x?=",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for n in 60..=80 {
            v.push("x".repeat(n));
            v.push(format!("{} {}", "a".repeat(n / 2), "b".repeat(n / 2)));
            v.push(format!("{} é", "w ".repeat(n / 2)));
        }
        v
    }

    fn lettre_line(h: HeaderValue) -> Vec<u8> {
        let mut headers = Headers::new();
        headers.insert_raw(h);
        headers.to_string().into_bytes()
    }

    #[test]
    fn direct_headers_match_lettre() {
        let mut headers = Headers::new();
        for value in header_samples() {
            let mut ours = Vec::new();
            put_value(&mut ours, &mut headers, "Subject", &[&value]);
            let theirs = lettre_line(HeaderValue::new(
                HeaderName::new_from_ascii_str("Subject"),
                value.clone(),
            ));
            assert_eq!(ours, theirs, "{value:?}");
        }
    }

    #[test]
    fn direct_to_matches_lettre() {
        let addr: Address = "reader@example.com"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let mut headers = Headers::new();
        for name in header_samples().into_iter().map(Some).chain([None]) {
            let mut ours = Vec::new();
            put_to(&mut ours, &mut headers, name.as_deref(), addr.clone());
            let mut theirs = Headers::new();
            theirs.set(header::To::from(Mailboxes::from(Mailbox::new(
                name.clone(),
                addr.clone(),
            ))));
            assert_eq!(ours, theirs.to_string().into_bytes(), "{name:?}");
        }
    }

    #[test]
    fn cached_date_matches_lettre() {
        for secs in [
            0,
            1,
            59,
            86_399,
            951_782_400,
            1_790_000_000,
            1_790_000_000,
            4_102_444_800,
        ] {
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + 999);
            let mut ours = Vec::new();
            put_date(&mut ours, t);
            let mut theirs = Headers::new();
            theirs.set(header::Date::new(t));
            assert_eq!(ours, theirs.to_string().into_bytes(), "{secs}");
        }
    }

    #[test]
    fn uri_escape_keeps_uri_characters() {
        assert_eq!(
            uri_escape("https://x.example/u?t=a+b&e=ü z"),
            "https://x.example/u?t=a+b&e=%C3%BC%20z"
        );
        assert_eq!(uri_escape("a<b>"), "a%3Cb%3E");
    }
}
