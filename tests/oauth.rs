//! OAuth2 (XOAUTH2) submission over real TCP and TLS: the sandbox accepts one access token and
//! refuses others as Gmail does; a token endpoint on loopback serves the refresh-token grant; a
//! token command is a real program run without a shell. A refused or missing token aborts the
//! run like a wrong password, with nothing charged to any recipient.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::oauth::{Issuer, TokenEndpoint};
use common::relay::{Relay, USER};
use mailroom::oauth::{Grant, Source, Tokens, http::Endpoint};
use mailroom::pipeline::{End, Stop};
use mailroom::shutdown::Shutdown;
use mailroom::transport::{Secret, Security, Settings};

const TOKEN: &str = "ya29.sandbox-access-token";

fn issuer(expires_in: u64, rotate: bool) -> Issuer {
    Issuer {
        client_id: "client-1.apps.example".into(),
        client_secret: "client-secret-1".into(),
        refresh_token: "1//refresh-token".into(),
        access_token: TOKEN.into(),
        expires_in,
        rotate,
    }
}

fn grant(endpoint: &TokenEndpoint, refresh_token: &str) -> Source {
    Source::Refresh(Grant {
        endpoint: Endpoint::parse(&endpoint.url).unwrap(),
        client_id: "client-1.apps.example".into(),
        client_secret: Some(Secret::new("client-secret-1".into())),
        refresh_token: Secret::new(refresh_token.into()),
        scope: None,
    })
}

fn tokens(source: Source) -> Arc<Tokens> {
    let roots = mailroom::tls::client_config(None).unwrap();
    Arc::new(Tokens::new(source, roots.config))
}

async fn xoauth2_relay() -> Relay {
    Relay::tls("", |c| c.xoauth2_token(TOKEN)).await
}

/// STARTTLS to the relay as [`USER`] with XOAUTH2 from `tokens`; one message per session, so
/// every message needs a token.
fn settings(relay: &Relay, tokens: Arc<Tokens>) -> Settings {
    Settings {
        username: Some(USER.into()),
        password: None,
        oauth: Some(tokens),
        ca_file: Some(relay.ca.clone()),
        messages_per_connection: 1,
        ..common::settings("localhost", relay.port(), Security::StartTls)
    }
}

async fn send(relay: &Relay, tokens: Arc<Tokens>, n: usize) -> common::Ran {
    common::try_run_once(
        &relay.ledger(),
        "oauth",
        common::people(&common::numbered("reader", n)),
        settings(relay, tokens),
        common::options(2),
        common::plain(),
        Shutdown::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_grant_token_is_fetched_once_and_reused_while_valid() {
    let relay = xoauth2_relay().await;
    let endpoint = TokenEndpoint::start(issuer(3600, false)).await;
    let ran = send(&relay, tokens(grant(&endpoint, "1//refresh-token")), 6).await;
    ran.writer.unwrap();
    let summary = ran.result.unwrap();
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 6);
    assert_eq!(relay.seen().messages_accepted, 6);
    assert!(relay.seen().sessions >= 6, "one message per session");
    assert_eq!(endpoint.requests(), 1, "a valid token is reused");
    let form = &endpoint.forms()[0];
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "1//refresh-token");
    assert_eq!(form["client_secret"], "client-secret-1");
    assert!(!relay.sandbox.transcript().join("\n").contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_refreshed_and_a_rotated_refresh_token_followed() {
    let relay = xoauth2_relay().await;
    // Lifetime 0: every session finds the token at the end of its life and fetches another;
    // each answer rotates the refresh token and the endpoint accepts only the newest.
    let endpoint = TokenEndpoint::start(issuer(0, true)).await;
    let ran = send(&relay, tokens(grant(&endpoint, "1//refresh-token")), 5).await;
    ran.writer.unwrap();
    let summary = ran.result.unwrap();
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 5);
    let sessions = usize::try_from(relay.seen().sessions).unwrap();
    assert_eq!(endpoint.requests(), sessions, "one refresh per session");
    let forms = endpoint.forms();
    assert_eq!(forms[0]["refresh_token"], "1//refresh-token");
    assert_eq!(forms[1]["refresh_token"], "1//refresh-token-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_aborts_with_the_endpoints_words_and_charges_no_one() {
    let relay = xoauth2_relay().await;
    let endpoint = TokenEndpoint::start(issuer(3600, false)).await;
    let ran = send(&relay, tokens(grant(&endpoint, "1//revoked")), 4).await;
    ran.writer.unwrap();
    let summary = ran.result.unwrap();
    let End::Aborted(Stop::Auth(reply)) = &summary.end else {
        panic!("expected an AUTH abort, got {:?}", summary.end);
    };
    assert!(reply.text.contains("invalid_grant"), "{}", reply.text);
    assert!(reply.text.contains("expired or revoked"), "{}", reply.text);
    assert!(!reply.text.contains("1//revoked"), "{}", reply.text);
    assert_eq!(relay.seen().messages_accepted, 0);
    assert_eq!(
        common::states(&relay.ledger()),
        common::state_map(&[("pending", 4)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_relay_refuses_aborts_like_a_wrong_password() {
    let relay = xoauth2_relay().await;
    let mut wrong = issuer(3600, false);
    wrong.access_token = "ya29.someone-elses-token".into();
    let endpoint = TokenEndpoint::start(wrong).await;
    let ran = send(&relay, tokens(grant(&endpoint, "1//refresh-token")), 3).await;
    ran.writer.unwrap();
    let summary = ran.result.unwrap();
    let End::Aborted(Stop::Auth(reply)) = &summary.end else {
        panic!("expected an AUTH abort, got {:?}", summary.end);
    };
    assert_eq!(reply.code, Some(535));
    assert!(reply.text.contains("status 400"), "{}", reply.text);
    assert!(!reply.text.contains("someone-elses"), "{}", reply.text);
    assert_eq!(
        common::states(&relay.ledger()),
        common::state_map(&[("pending", 3)])
    );
    // The client answered the 334 challenge with the empty line XOAUTH2 asks for.
    let transcript = relay.sandbox.transcript();
    let at = transcript
        .iter()
        .position(|l| l.starts_with("AUTH XOAUTH2"))
        .unwrap();
    assert_eq!(transcript[at + 1], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_command_runs_without_a_shell_and_its_json_is_used() {
    let relay = xoauth2_relay().await;
    // If a shell ran this, `$(…)` would be expanded; echo prints it verbatim as JSON.
    let json = format!(r#"{{"access_token":"{TOKEN}","expires_in":3600}}"#);
    let source = Source::Command(vec!["echo".into(), json]);
    let ran = send(&relay, tokens(source), 3).await;
    ran.writer.unwrap();
    assert_eq!(ran.result.unwrap().accepted, 3);

    let failing = Source::Command(vec![
        "sh".into(),
        "-c".into(),
        "echo leaked >&2; exit 3".into(),
    ]);
    let second = xoauth2_relay().await;
    let ran = send(&second, tokens(failing), 2).await;
    let summary = ran.result.unwrap();
    let End::Aborted(Stop::Auth(reply)) = &summary.end else {
        panic!("expected an AUTH abort, got {:?}", summary.end);
    };
    assert!(
        reply.text.contains("token command sh failed"),
        "{}",
        reply.text
    );
    assert!(reply.text.contains("exit status: 3"), "{}", reply.text);
    assert!(!reply.text.contains("leaked"), "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_xoauth2_is_named_not_guessed_around() {
    // AUTH offered (PLAIN LOGIN) but no XOAUTH2: no password fallback, a clear refusal.
    let relay = Relay::tls("", |c| c).await;
    let endpoint = TokenEndpoint::start(issuer(3600, false)).await;
    let ran = send(&relay, tokens(grant(&endpoint, "1//refresh-token")), 1).await;
    let summary = ran.result.unwrap();
    let End::Aborted(Stop::Auth(reply)) = &summary.end else {
        panic!("expected an AUTH abort, got {:?}", summary.end);
    };
    assert!(
        reply.text.contains("does not offer XOAUTH2"),
        "{}",
        reply.text
    );
    assert!(reply.text.contains("PLAIN LOGIN"), "{}", reply.text);
    assert_eq!(
        endpoint.requests(),
        0,
        "no token is fetched for a relay that cannot take it"
    );
}
