//! SMTP AUTH (RFC 4954) for a relay session: PLAIN or LOGIN with a password, XOAUTH2 with an
//! OAuth2 access token. The caller has already made sure the connection is encrypted (or goes
//! to loopback); this module must not send a credential otherwise, nor put one in a reply
//! text, a log line or an error.

use std::sync::Arc;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::{ConnectFailure, PortFailure, Reply, Secret, Step, Stream};
use crate::smtp::{self, Conn, Extensions};

/// What a session authenticates with.
#[derive(Debug, Clone)]
pub(super) enum Credentials {
    Password {
        user: String,
        password: Secret,
    },
    OAuth {
        user: String,
        tokens: Arc<crate::oauth::Tokens>,
    },
}

/// Authenticates `conn`; anything but 235 at the end is a refusal ([`ConnectFailure::Auth`]),
/// which stops the run like a wrong password: nothing is charged to a recipient.
pub(super) async fn authenticate(
    conn: &mut Conn<Stream>,
    ext: &Extensions,
    credentials: &Credentials,
) -> Result<(), PortFailure> {
    match credentials {
        Credentials::Password { user, password } => with_password(conn, ext, user, password).await,
        Credentials::OAuth { user, tokens } => with_token(conn, ext, user, tokens).await,
    }
}

fn refused(reply: Reply) -> PortFailure {
    PortFailure::Stop(ConnectFailure::Auth(reply))
}

fn lost(e: smtp::Error) -> PortFailure {
    refused(Reply::lost(Step::Auth, &e))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn offered(ext: &Extensions) -> String {
    if ext.auth.is_empty() {
        "none".to_owned()
    } else {
        ext.auth.join(" ")
    }
}

/// AUTH PLAIN (RFC 4616) when offered, else LOGIN.
async fn with_password(
    conn: &mut Conn<Stream>,
    ext: &Extensions,
    user: &str,
    password: &Secret,
) -> Result<(), PortFailure> {
    let reply = if ext.offers_auth("PLAIN") {
        // Every string that holds the password, plainly or in base64, is overwritten on drop.
        let raw = Secret::concat(&["\0", user, "\0", password.expose()]);
        let token = Zeroizing::new(b64(raw.as_bytes()));
        let first = conn
            .command(&Secret::concat(&["AUTH PLAIN ", &token]))
            .await
            .map_err(lost)?;
        if first.code == 334 {
            // A server that does not take the initial response asks for it (RFC 4954 §4).
            conn.command(&token).await.map_err(lost)?
        } else {
            first
        }
    } else if ext.offers_auth("LOGIN") {
        let mut reply = conn.command("AUTH LOGIN").await.map_err(lost)?;
        for answer in [user.as_bytes(), password.expose().as_bytes()] {
            if reply.code != 334 {
                break;
            }
            reply = conn
                .command(&Zeroizing::new(b64(answer)))
                .await
                .map_err(lost)?;
        }
        reply
    } else {
        return Err(refused(Reply::local(
            Step::Auth,
            format!(
                "the relay offers no AUTH mechanism mailroom speaks with a password (offered: {}; \
                 mailroom uses PLAIN or LOGIN)",
                offered(ext)
            ),
        )));
    };
    if reply.code == 235 {
        Ok(())
    } else {
        Err(refused(Reply::from_smtp(Step::Auth, &reply)))
    }
}

/// AUTH XOAUTH2 with the initial response. A refused token gets a 334 carrying a base64 JSON
/// error; the client answers with an empty line and the server ends with 535 (Gmail's and
/// Microsoft's documented exchange).
async fn with_token(
    conn: &mut Conn<Stream>,
    ext: &Extensions,
    user: &str,
    tokens: &crate::oauth::Tokens,
) -> Result<(), PortFailure> {
    if !ext.offers_auth("XOAUTH2") {
        return Err(refused(Reply::local(
            Step::Auth,
            format!(
                "auth = \"xoauth2\" but the relay does not offer XOAUTH2 (offered: {})",
                offered(ext)
            ),
        )));
    }
    let token = tokens.token().await.map_err(|e| {
        refused(Reply::local(
            Step::Auth,
            format!("no OAuth2 access token: {e}"),
        ))
    })?;
    let response = crate::oauth::xoauth2_response(user, &token);
    let first = conn
        .command(&Secret::concat(&["AUTH XOAUTH2 ", &response]))
        .await
        .map_err(lost)?;
    if first.code == 235 {
        return Ok(());
    }
    if first.code != 334 {
        return Err(refused(Reply::from_smtp(Step::Auth, &first)));
    }
    let detail = crate::oauth::describe_challenge(&first.message());
    let last = conn.command("").await.map_err(lost)?;
    let mut reply = Reply::from_smtp(Step::Auth, &last);
    if let Some(detail) = detail {
        reply.text = format!("{}\n{detail}", reply.text);
    }
    Err(refused(reply))
}
