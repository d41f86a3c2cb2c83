//! The verdict of the authentication checks: each finding's status, the mailbox providers'
//! requirements (Gmail, Yahoo, Microsoft; see docs/authentication.md for the sources) as rows
//! met / not met / not checkable, the fix for each unmet one, the exit code, and the text form.
//! Pure: `doctor --dns` and `doctor --inspect` build findings, this turns them into a verdict.

use std::fmt::Write as _;

use serde::Serialize;

/// How one finding came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// Worth knowing; changes nothing.
    Info,
    /// Works, but weaker than it should be; does not fail the run.
    Warn,
    /// Cannot be known from here (PTR of the relay, complaint rate, a relay's own DKIM).
    NotCheckable,
    /// A rule is not met.
    Fail,
    /// A lookup got no answer (timeout, REFUSED, SERVFAIL): unknown, never "fine".
    CouldNotCheck,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pass => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::NotCheckable => "n/a",
            Status::Fail => "FAIL",
            Status::CouldNotCheck => "ERROR",
        }
    }
}

/// What a finding is about: the verdict rows group findings by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    Spf,
    Dkim,
    Dmarc,
    Alignment,
    Bounces,
    FreeMail,
    Unsubscribe,
    Tls,
    Ptr,
    Complaints,
}

/// One checked fact.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub topic: Topic,
    /// The domain (or hop) it is about.
    pub subject: String,
    pub status: Status,
    pub summary: String,
    pub details: Vec<String>,
    /// The exact DNS record or config line that fixes it.
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(topic: Topic, subject: &str, status: Status, summary: impl Into<String>) -> Finding {
        Finding {
            topic,
            subject: subject.to_owned(),
            status,
            summary: summary.into(),
            details: Vec::new(),
            fix: None,
        }
    }

    pub fn detail(mut self, d: impl Into<String>) -> Finding {
        self.details.push(d.into());
        self
    }

    pub fn fix(mut self, f: impl Into<String>) -> Finding {
        self.fix = Some(f.into());
        self
    }
}

/// A row's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Met,
    NotMet,
    NotCheckable,
    CouldNotCheck,
}

impl RowStatus {
    fn words(self) -> &'static str {
        match self {
            RowStatus::Met => "met",
            RowStatus::NotMet => "NOT MET",
            RowStatus::NotCheckable => "not checkable from here",
            RowStatus::CouldNotCheck => "could not check",
        }
    }
}

/// One provider requirement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub requirement: &'static str,
    pub gmail: bool,
    pub yahoo: bool,
    pub microsoft: bool,
    pub status: RowStatus,
    /// The fix of the first finding that is not met.
    pub fix: Option<String>,
}

/// The requirements, who asks for them (bulk-sender rules of 2024 and Microsoft's of May
/// 2025), and the findings that decide them.
const ROWS: &[(&str, [bool; 3], Topic)] = &[
    (
        "SPF published for the envelope domain",
        [true, true, true],
        Topic::Spf,
    ),
    (
        "DKIM signature verifies with the published key",
        [true, true, true],
        Topic::Dkim,
    ),
    (
        "DMARC record (p=none or stronger)",
        [true, true, true],
        Topic::Dmarc,
    ),
    (
        "From aligned with DKIM d= or the envelope domain",
        [true, true, true],
        Topic::Alignment,
    ),
    (
        "Bounces can come back (MX or A of the envelope domain)",
        [true, true, true],
        Topic::Bounces,
    ),
    (
        "No free-mail From through another relay",
        [true, true, true],
        Topic::FreeMail,
    ),
    (
        "One-click unsubscribe and a visible link",
        [true, true, false],
        Topic::Unsubscribe,
    ),
    ("TLS on every hop", [true, false, false], Topic::Tls),
    (
        "Reverse DNS (PTR) of the sending IP",
        [true, true, false],
        Topic::Ptr,
    ),
    (
        "Complaint rate under 0.3 %",
        [true, true, false],
        Topic::Complaints,
    ),
];

/// The rows whose topic has findings, each as the worst of them.
pub fn rows(findings: &[Finding]) -> Vec<Row> {
    ROWS.iter()
        .filter_map(|(requirement, [gmail, yahoo, microsoft], topic)| {
            let mine: Vec<&Finding> = findings.iter().filter(|f| f.topic == *topic).collect();
            let worst = mine.iter().map(|f| f.status).max()?;
            let status = match worst {
                Status::Pass | Status::Info | Status::Warn => RowStatus::Met,
                Status::NotCheckable => RowStatus::NotCheckable,
                Status::Fail => RowStatus::NotMet,
                Status::CouldNotCheck => RowStatus::CouldNotCheck,
            };
            let fix = match status {
                RowStatus::Met => None,
                _ => mine
                    .iter()
                    .filter(|f| f.status == worst)
                    .find_map(|f| f.fix.clone()),
            };
            Some(Row {
                requirement,
                gmail: *gmail,
                yahoo: *yahoo,
                microsoft: *microsoft,
                status,
                fix,
            })
        })
        .collect()
}

/// 0: every checkable rule is met; 1: a rule is not met; 2: a lookup got no answer.
pub fn exit_code(findings: &[Finding]) -> u8 {
    if findings.iter().any(|f| f.status == Status::CouldNotCheck) {
        2
    } else if findings.iter().any(|f| f.status == Status::Fail) {
        1
    } else {
        0
    }
}

/// The findings, then the table, then the fixes.
pub fn to_text(title: &str, findings: &[Finding], rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    for f in findings {
        let _ = writeln!(
            out,
            "  {:<5} {}: {}",
            f.status.word(),
            crate::display::one_line(&f.subject),
            crate::display::one_line(&f.summary)
        );
        for d in &f.details {
            let _ = writeln!(out, "          {}", crate::display::one_line(d));
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:<54} {:<5} {:<5} {:<9} status",
        "requirement", "Gmail", "Yahoo", "Microsoft"
    );
    let yes = |b: bool| if b { "yes" } else { "-" };
    for r in rows {
        let _ = writeln!(
            out,
            "  {:<54} {:<5} {:<5} {:<9} {}",
            r.requirement,
            yes(r.gmail),
            yes(r.yahoo),
            yes(r.microsoft),
            r.status.words()
        );
    }
    let fixes: Vec<&Row> = rows.iter().filter(|r| r.fix.is_some()).collect();
    if !fixes.is_empty() {
        let _ = writeln!(out, "\nto fix:");
        for r in fixes {
            let _ = writeln!(out, "  {}:", r.requirement);
            for line in r.fix.iter().flat_map(|f| f.lines()) {
                let _ = writeln!(out, "    {}", crate::display::one_line(line));
            }
        }
    }
    let nothing_checked = rows.iter().all(|r| r.status == RowStatus::NotCheckable);
    let verdict = match exit_code_of_rows(rows) {
        0 if nothing_checked => {
            "verdict: NOTHING could be checked from here (see above); this is not an all-clear"
        }
        0 => "verdict: every rule that can be checked from here is met",
        1 => "verdict: a rule is NOT met (see above)",
        _ => {
            "verdict: COULD NOT CHECK everything (a lookup got no answer); this is not an all-clear"
        }
    };
    let _ = writeln!(out, "\n{verdict}");
    out
}

fn exit_code_of_rows(rows: &[Row]) -> u8 {
    if rows.iter().any(|r| r.status == RowStatus::CouldNotCheck) {
        2
    } else if rows.iter().any(|r| r.status == RowStatus::NotMet) {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_finding_decides_the_row_and_the_exit_code() {
        let f = vec![
            Finding::new(Topic::Spf, "a.example", Status::Pass, "ok"),
            Finding::new(Topic::Spf, "b.example", Status::Warn, "?all"),
            Finding::new(
                Topic::Dkim,
                "a.example",
                Status::NotCheckable,
                "relay signs",
            ),
            Finding::new(Topic::Dmarc, "a.example", Status::Fail, "none").fix("_dmarc..."),
        ];
        let r = rows(&f);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].status, RowStatus::Met);
        assert_eq!(r[1].status, RowStatus::NotCheckable);
        assert_eq!(r[2].status, RowStatus::NotMet);
        assert_eq!(r[2].fix.as_deref(), Some("_dmarc..."));
        assert_eq!(exit_code(&f), 1);
        let mut g = f.clone();
        g.push(Finding::new(
            Topic::Bounces,
            "a.example",
            Status::CouldNotCheck,
            "timeout",
        ));
        assert_eq!(exit_code(&g), 2);
        assert_eq!(exit_code(&f[..3]), 0);
    }
}
