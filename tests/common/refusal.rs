//! Runs a relay refuses: the table shape shared by tests/send.rs and tests/faults.rs. A row is
//! a relay script and the client's settings; every row must end the run (paused or aborted,
//! saying why) with every recipient still pending, nobody charged, nothing stored, and the
//! commands the relay must never have seen absent from its transcript.

use std::path::Path;
use std::sync::Arc;

use mailroom::pipeline::{End, Summary};
use mailroom::shutdown::Shutdown;
use mailroom::transport::{Security, Settings};

use super::relay::Relay;
use super::{PlainRender, contacts, options, run_once, state_map, states};

/// A run the relay refuses, and how it must stop.
pub struct Refusal {
    /// The sandbox script.
    pub script: &'static str,
    /// STARTTLS and AUTH (settings: [`Relay::tls_settings`]); otherwise plaintext only.
    pub tls: bool,
    /// Applied to the relay's settings.
    pub settings: fn(Settings) -> Settings,
    /// The envelope sender.
    pub from: &'static str,
    /// Recipients: local parts at example.test, or whole addresses.
    pub locals: &'static [&'static str],
    pub connections: usize,
    /// The ends allowed ("paused", "aborted"), and what the reason must say.
    pub ends: &'static [&'static str],
    pub says: &'static [&'static str],
    /// Commands the relay must have received, and those it must never have received.
    pub seen: &'static [&'static str],
    pub never: &'static [&'static str],
    /// One-off facts about the ledger after the run.
    pub check: Option<fn(&Summary, &Path)>,
}

impl Default for Refusal {
    fn default() -> Self {
        Refusal {
            script: "",
            tls: false,
            settings: |s| s,
            from: "news@sender.test",
            locals: &["x0", "x1"],
            connections: 1,
            ends: &["aborted"],
            says: &[],
            seen: &[],
            never: &[],
            check: None,
        }
    }
}

/// Runs `case` against a fresh sandbox and checks what every refusal must leave.
pub async fn refused(case: Refusal) {
    let relay = if case.tls {
        Relay::tls(case.script, |c| c).await
    } else {
        Relay::plain(case.script).await
    };
    let settings = if case.tls {
        relay.tls_settings(Security::StartTls)
    } else {
        relay.plain_settings()
    };
    let l = relay.ledger();
    let render = Arc::new(PlainRender {
        from: case.from.into(),
    });
    let (summary, _) = run_once(
        &l,
        "refused",
        contacts(case.locals),
        (case.settings)(settings),
        options(case.connections),
        render,
        Shutdown::new(),
    )
    .await;
    let why = match &summary.end {
        End::Paused(why) | End::Aborted(why)
            if case.ends.contains(&summary.end.outcome().as_str()) =>
        {
            why.to_string()
        }
        other => panic!("expected one of {:?}, got {other:?}", case.ends),
    };
    for needle in case.says {
        assert!(why.contains(needle), "{why}");
    }
    let pending = case.locals.len() as i64;
    assert_eq!(states(&l), state_map(&[("pending", pending)]));
    let conn = rusqlite::Connection::open(&l).unwrap();
    let charged: i64 = conn
        .query_row("SELECT sum(attempts) FROM recipients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(charged, 0);
    assert_eq!(relay.seen().messages_accepted, 0);
    assert_eq!(relay.stored(), 0);
    let transcript = relay.sandbox.transcript();
    for verb in case.seen {
        assert!(relay.transcript_has(verb), "{verb} missing: {transcript:?}");
    }
    for verb in case.never {
        assert!(!relay.transcript_has(verb), "{verb} sent: {transcript:?}");
    }
    if let Some(check) = case.check {
        check(&summary, &l);
    }
}

/// One `#[tokio::test]` per row: `name: Refusal { .. };`. (Every test crate compiles this
/// module; those without refusals do not use it.)
#[allow(unused_macros)]
macro_rules! refusals {
    ($($name:ident: $case:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            common::refusal::refused($case).await;
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use refusals;
