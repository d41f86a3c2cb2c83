//! Parse throughput of `mailroom::bounce::parse` over both bounce development sets, against a
//! reference measured in the same run: mail-parser's MIME parse alone on the same messages (the
//! floor our parser builds on). Run: `cargo bench --bench bounce_parse`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use mail_parser::MessageParser;

fn load() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces");
    let mut files: Vec<_> = ["corpus", "more"]
        .iter()
        .flat_map(|set| std::fs::read_dir(root.join(set)).expect("fixture set folder"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("fixture file"))
        .collect()
}

/// Runs `f` over every message repeatedly for at least `budget`; returns messages per second.
fn measure(
    messages: &[Vec<u8>],
    budget: Duration,
    mut f: impl FnMut(&[u8]) -> usize,
) -> (f64, usize) {
    // Warm-up pass (page cache, allocator).
    let mut sink = 0;
    for m in messages {
        sink += f(m);
    }
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < budget {
        for m in messages {
            sink += f(black_box(m));
        }
        done += messages.len();
    }
    let secs = start.elapsed().as_secs_f64();
    (done as f64 / secs, black_box(sink))
}

/// Rounds of half a second each, the reference and ours in turn: on a shared machine the load
/// changes from second to second, and alternating exposes both to the same load.
const ROUNDS: usize = 6;

fn main() {
    let messages = load();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let reports: usize = messages
        .iter()
        .map(|m| mailroom::bounce::parse(m).len())
        .sum();
    let budget = Duration::from_millis(500);
    let parser = MessageParser::default();
    let (mut reference, mut ours) = (0.0, 0.0);
    let mut ratios = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let (r, _) = measure(&messages, budget, |m| {
            parser.parse(m).map_or(0, |p| p.parts.len())
        });
        let (o, _) = measure(&messages, budget, |m| mailroom::bounce::parse(m).len());
        reference += r / ROUNDS as f64;
        ours += o / ROUNDS as f64;
        ratios.push(o / r);
    }
    ratios.sort_by(f64::total_cmp);
    let per_report = reports as f64 / messages.len() as f64;
    println!(
        "both development sets: {} messages, {} reports, {:.1} KiB",
        messages.len(),
        reports,
        bytes as f64 / 1024.0
    );
    println!("mail-parser parse only (reference): {reference:>10.0} messages/s");
    println!(
        "mailroom::bounce::parse:             {ours:>10.0} messages/s  ({:.0} reports/s)",
        ours * per_report
    );
    println!(
        "ratio bounce::parse / reference:     {:>10.2}  (rounds: {:.2} to {:.2}, median {:.2})",
        ours / reference,
        ratios[0],
        ratios[ROUNDS - 1],
        ratios[ROUNDS / 2]
    );
}
