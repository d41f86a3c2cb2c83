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
        user: USER.into(),
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

/// `[smtp]` for XOAUTH2 against `relay` with the refresh grant served by `endpoint`.
fn oauth_smtp(relay: &Relay, endpoint: &TokenEndpoint) -> String {
    format!(
        "host = \"localhost\"\nport = {}\nsecurity = \"starttls\"\nca_file = \"{}\"\n\
         username = \"{USER}\"\nauth = \"xoauth2\"\nprovider = \"google\"\ntoken_url = \"{}\"\n\
         client_id_env = \"TEST_OAUTH_CLIENT_ID\"\nclient_secret_env = \"TEST_OAUTH_CLIENT_SECRET\"\n\
         refresh_token_env = \"TEST_OAUTH_REFRESH\"\nmessages_per_connection = 2\n",
        relay.port(),
        relay.ca.display(),
        endpoint.url
    )
}

async fn mailroom(args: &[&std::ffi::OsStr], refresh_token: &str) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .env("TEST_OAUTH_CLIENT_ID", "client-1.apps.example")
        .env("TEST_OAUTH_CLIENT_SECRET", "client-secret-1")
        .env("TEST_OAUTH_REFRESH", refresh_token)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_with_auth_xoauth2_delivers_and_no_secret_reaches_output_or_ledger() {
    let relay = xoauth2_relay().await;
    let endpoint = TokenEndpoint::start(issuer(3600, false)).await;
    let emails: Vec<String> = (0..5).map(|i| format!("r{i}@example.test")).collect();
    let root = common::write_campaign(
        relay.dir.path(),
        "oauth-cli",
        "news@example.com",
        &oauth_smtp(&relay, &endpoint),
        &emails,
    );
    let (code, out) = mailroom(
        &["send".as_ref(), root.as_os_str(), "--yes".as_ref()],
        "1//refresh-token",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(relay.seen().messages_accepted, 5, "{out}");
    assert_eq!(endpoint.requests(), 1);
    let mut ledger_bytes = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("mailroom.db")
        {
            ledger_bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    let ledger = String::from_utf8_lossy(&ledger_bytes);
    for secret in [TOKEN, "1//refresh-token", "client-secret-1"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
        assert!(!ledger.contains(secret), "{secret} in the ledger");
    }

    // A revoked refresh token: exit like a wrong password, the endpoint's words, nothing sent.
    let relay = xoauth2_relay().await;
    let root = common::write_campaign(
        relay.dir.path(),
        "oauth-revoked",
        "news@example.com",
        &oauth_smtp(&relay, &endpoint),
        &emails,
    );
    let (code, out) = mailroom(
        &["send".as_ref(), root.as_os_str(), "--yes".as_ref()],
        "1//revoked",
    )
    .await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    assert!(out.contains("invalid_grant"), "{out}");
    assert!(!out.contains("1//revoked"), "{out}");
    assert_eq!(relay.seen().messages_accepted, 0);
}

#[test]
fn oauth_settings_that_do_not_make_one_method_are_refused_at_their_line() {
    let cases: [(&str, &str); 6] = [
        (
            "username = \"u\"\nauth = \"xoauth2\"\n",
            "needs a token source",
        ),
        (
            "auth = \"xoauth2\"\ntoken_command = [\"echo\", \"t\"]\n",
            "needs username",
        ),
        (
            "username = \"u\"\nauth = \"xoauth2\"\ntoken_command = [\"echo\"]\nprovider = \"google\"\n",
            "belongs to the refresh-token flow",
        ),
        (
            "username = \"u\"\ntoken_command = [\"echo\"]\n",
            "auth is not \"xoauth2\"",
        ),
        (
            "username = \"u\"\nauth = \"xoauth2\"\nprovider = \"google\"\nclient_id_env = \"A\"\n\
             refresh_token_env = \"B\"\ntoken_url = \"http://oauth.example.com/token\"\n",
            "plain http is allowed only to a loopback address",
        ),
        (
            "username = \"u\"\nauth = \"xoauth2\"\ntoken_command = [\"echo\"]\npassword_env = \"P\"\n",
            "does not use a password",
        ),
    ];
    for (smtp, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let table = format!("host = \"smtp.example.com\"\nsecurity = \"starttls\"\n{smtp}");
        let root = common::write_campaign(dir.path(), "c", "news@example.com", &table, &[]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .arg("check")
            .arg(&root)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{smtp}");
        assert!(text.contains(expected), "{smtp}\n{text}");
        assert!(
            text.contains("campaign.toml:"),
            "names the file and line: {text}"
        );
    }
}
