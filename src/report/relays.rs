//! The per-relay part of a report: what each `[[relay]]` did for the campaign (attempts,
//! accepted, deferred, bounced, failures given back uncharged, cool-offs), in text, Markdown and
//! HTML. Shown only when the campaign went through more than one relay. It must not query the
//! ledger (the rows come from `store::Reader::relay_figures`).

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::display::one_line;
use crate::store::RelayFigures;

fn last(r: &RelayFigures) -> String {
    one_line(r.last_cooloff.as_deref().unwrap_or(""))
}

/// The relays as a text table (nothing when there are none).
pub(super) fn write_text(relays: &[RelayFigures], out: &mut dyn Write) -> io::Result<()> {
    if relays.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "Relays")?;
    writeln!(
        out,
        "  {:<16} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}  last cool-off",
        "relay", "attempts", "accepted", "deferred", "bounced", "failures", "cool-offs"
    )?;
    for r in relays {
        writeln!(
            out,
            "  {:<16} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}  {}",
            one_line(&r.name),
            r.attempts,
            r.accepted,
            r.deferred,
            r.bounced,
            r.failures,
            r.cooloffs,
            last(r)
        )?;
    }
    Ok(())
}

/// The relays as a Markdown section (nothing when there are none).
pub(super) fn write_markdown(
    relays: &[RelayFigures],
    out: &mut dyn Write,
    md: impl Fn(&str) -> String,
) -> io::Result<()> {
    if relays.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "## Relays")?;
    writeln!(out)?;
    writeln!(
        out,
        "| relay | attempts | accepted | deferred | bounced | failures | cool-offs | last cool-off |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---|")?;
    for r in relays {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            md(&r.name),
            r.attempts,
            r.accepted,
            r.deferred,
            r.bounced,
            r.failures,
            r.cooloffs,
            md(&last(r))
        )?;
    }
    Ok(())
}

/// The relays as an HTML section (nothing when there are none).
pub(super) fn write_html(relays: &[RelayFigures], h: &mut String, esc: impl Fn(&str) -> String) {
    if relays.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<h2>Relays</h2><table><tr><th>Relay</th><th>Attempts</th><th>Accepted</th>\
         <th>Deferred</th><th>Bounced</th><th>Failures</th><th>Cool-offs</th>\
         <th>Last cool-off</th></tr>"
    );
    for r in relays {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            esc(&one_line(&r.name)),
            r.attempts,
            r.accepted,
            r.deferred,
            r.bounced,
            r.failures,
            r.cooloffs,
            esc(&last(r))
        );
    }
    let _ = writeln!(h, "</table>");
}
