//! Campaign benchmark (harness = false): `cargo bench --bench campaign` (env ROWS, default
//! 1,000,000; RENDER_ROWS, default 200,000). Generates a campaign with a ROWS-row CSV in a
//! temporary folder, then measures, in one run on the same file:
//!
//! 1. reference: a bare csv-crate read (one reused ByteRecord), the physical limit for parsing;
//! 2. `Campaign::contacts()` (validation, normalisation, dedup) rows/s;
//! 3. `Campaign::render_at` (Handlebars + lettre MIME build) messages/s on one thread;
//! 4. the release `mailroom check` binary end to end (parse + render every row on all cores),
//!    rows/s and peak RSS (VmHWM via `/usr/bin/time -v`), which must stay under 150 MiB.
//!
//! Figures are printed as a Markdown table with ratios to the reference.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Instant, UNIX_EPOCH};

use mailroom::campaign::{Campaign, ContactEntry};

const TOML: &str = r#"[campaign]
name = "bench"
from = "Bench News <news@example.com>"
subject = "{{default first_name \"Hello\"}}, news from {{city}}"
text = "body.txt.hbs"
html = "body.html.hbs"

[contacts]
path = "contacts.csv"

[unsubscribe]
url = "https://example.com/u/{{token}}"

[bounces]
return_path = "bounces+{token}@example.com"
"#;

const TEXT: &str = "Hello {{default first_name \"there\"}},\n\nThis month in {{city}}: \
    a paragraph of ordinary newsletter text that is long enough to need folding and \
    quoted-printable soft line breaks in the encoded body, as real letters do.\n\n{{> footer}}\n";
const HTML: &str = "<html><body><h1>Hello {{default first_name \"there\"}}</h1>\n<p>This month \
    in {{city}}: a paragraph of ordinary newsletter text.</p>\n{{> footer}}\n</body></html>\n";
const FOOTER: &str =
    "Unsubscribe: {{unsubscribe_url}}\nExample Ltd, 1 Example Street, Example City\n";

fn generate(dir: &Path, rows: u64) {
    std::fs::write(dir.join("campaign.toml"), TOML).unwrap();
    std::fs::write(dir.join("body.txt.hbs"), TEXT).unwrap();
    std::fs::write(dir.join("body.html.hbs"), HTML).unwrap();
    std::fs::create_dir_all(dir.join("partials")).unwrap();
    std::fs::write(dir.join("partials/footer.hbs"), FOOTER).unwrap();
    let f = std::fs::File::create(dir.join("contacts.csv")).unwrap();
    let mut w = std::io::BufWriter::new(f);
    writeln!(w, "email,name,first_name,city").unwrap();
    let cities = ["Oslo", "Sevilla", "Zürich", "\"Paris, France\"", "Kraków"];
    for i in 0..rows {
        writeln!(
            w,
            "user{i}@Domain{}.example,First{i} Last,First{i},{}",
            i % 97,
            cities[(i % 5) as usize]
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// CPU seconds (user + system) this thread has used, from /proc (Linux); 0 elsewhere.
/// The machine is shared, so CPU time is the stable figure and wall time the honest one.
fn thread_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rate(n: u64, secs: f64) -> f64 {
    n as f64 / secs
}

fn main() {
    let rows: u64 = std::env::var("ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let render_rows: u64 = std::env::var("RENDER_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000)
        .min(rows);
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    generate(dir.path(), rows);
    let csv_bytes = std::fs::metadata(dir.path().join("contacts.csv"))
        .unwrap()
        .len();
    eprintln!(
        "generated {rows} rows ({:.1} MiB) in {:.1} s",
        csv_bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    // 1. Reference: the csv crate alone.
    let t = Instant::now();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(dir.path().join("contacts.csv"))
        .unwrap();
    let mut rec = csv::ByteRecord::new();
    let mut n = 0u64;
    while rdr.read_byte_record(&mut rec).unwrap() {
        n += 1;
    }
    let bare = rate(n, t.elapsed().as_secs_f64());
    assert_eq!(n, rows);

    // 2. Contact validation stream.
    let campaign = Campaign::load(dir.path()).unwrap();
    let t = Instant::now();
    let mut valid = 0u64;
    for e in campaign.contacts().unwrap() {
        if matches!(e.unwrap(), ContactEntry::Valid(_)) {
            valid += 1;
        }
    }
    let contacts = rate(valid, t.elapsed().as_secs_f64());
    assert_eq!(valid, rows);

    // 3. Render + MIME build on one thread (contacts collected first, so only rendering is timed).
    let sample: Vec<_> = campaign
        .contacts()
        .unwrap()
        .take(render_rows as usize)
        .filter_map(|e| match e.unwrap() {
            ContactEntry::Valid(c) => Some(c),
            _ => None,
        })
        .collect();
    let date = UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
    let t = Instant::now();
    let cpu0 = thread_cpu_secs();
    let mut bytes = 0usize;
    for c in &sample {
        bytes += campaign.render_at(c, date).unwrap().bytes.len();
    }
    let render = rate(sample.len() as u64, t.elapsed().as_secs_f64());
    let render_cpu = rate(sample.len() as u64, thread_cpu_secs() - cpu0);
    let avg = bytes / sample.len().max(1);
    drop(sample);

    // 4. The release binary, end to end, with peak RSS.
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_mailroom"))
        .arg("check")
        .arg("--json")
        .arg(dir.path())
        .output()
        .unwrap();
    let wall = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let field = |name: &str| -> f64 {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let check_cpu = field("User time (seconds):") + field("System time (seconds):");
    let maxrss_kib: u64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(report["valid"].as_u64(), Some(rows));
    let check = rate(rows, wall);
    let rss_mib = maxrss_kib as f64 / 1024.0;

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("| measure ({rows} rows, {cores} cores) | rate | vs bare csv read |");
    println!("|---|---:|---:|");
    println!("| bare csv-crate read (reference) | {bare:.0} rows/s | 1.00 |");
    println!(
        "| `Campaign::contacts()` validate + dedup | {contacts:.0} rows/s | {:.2} |",
        contacts / bare
    );
    println!(
        "| `render_at` (Handlebars + MIME), 1 thread, {render_rows} msgs, avg {avg} B | {render:.0} msgs/s wall, {render_cpu:.0} msgs per CPU-second | {:.3} |",
        render / bare
    );
    println!(
        "| `mailroom check` end to end (parse + render all) | {check:.0} rows/s ({wall:.1} s wall, {check_cpu:.1} CPU-s: {:.0} rows per CPU-second) | {:.3} |",
        rate(rows, check_cpu),
        check / bare
    );
    println!(
        "| `mailroom check` peak RSS | {rss_mib:.1} MiB | limit 150 MiB: {} |",
        if rss_mib > 0.0 && rss_mib < 150.0 {
            "PASS"
        } else {
            "FAIL"
        }
    );
    assert!(rss_mib < 150.0, "peak RSS {rss_mib:.1} MiB exceeds 150 MiB");
}
