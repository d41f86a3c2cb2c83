#!/usr/bin/env bash
# A whole `mailroom send` of a large campaign (1,000,000 recipients by default) to Postfix's
# smtp-sink on loopback, end to end: reading and checking the contacts, importing them into a new
# ledger, sending every message over 4 connections and recording every outcome. Compared in the
# same run with Postfix's smtp-source sending as many messages of the same size to the same sink.
#
# Prints: wall time and msg/s of both, their ratio, the time outside the delivery phase (the
# import before the first connection plus the final checkpoint; `send` reports the delivery
# phase itself), the peak RSS of `mailroom send`, and the ledger's size on disk after it exits
# (every `<ledger>*` file: db, -wal, -shm, -inflight) per recipient.
#
# Usage: scripts/bench-million.sh            (needs postfix installed, GNU time, a release build)
# Knobs: N (recipients, default 1000000), SESSIONS (4), PORT (2728).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
SESSIONS=${SESSIONS:-4}
PORT=${PORT:-2728}
export PATH="$PATH:/usr/sbin"
for tool in smtp-sink smtp-source /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench-million: $tool not found" >&2; exit 2; }
done

cargo build --release --quiet --bin mailroom
bin=$PWD/target/release/mailroom
work=$(mktemp -d)
sink_pid=
cleanup() {
  [[ -n $sink_pid ]] && kill "$sink_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
smtp-sink -u nobody "127.0.0.1:$PORT" 1024 &
sink_pid=$!
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

camp=$work/million
"$bin" init "$camp" >/dev/null
python3 - "$camp" "$N" "$PORT" "$SESSIONS" <<'PY'
import re, sys
camp, n, port, sessions = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
toml = open(f"{camp}/campaign.toml").read()
toml = re.sub(r'(?m)^name = .*$', 'name = "million"', toml, count=1)
smtp = (f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f'connections = {sessions}\nmessages_per_connection = 100000\n')
toml = re.sub(r'(?ms)^\[smtp\].*?(?=^\[rate\])', smtp + '\n', toml)
toml = re.sub(r'(?ms)^\[rate\].*?(?=^\[retry\])', '[rate]\nper_second = 1000000\n\n', toml)
# No MX lookups for the mailbox-provider report: they would go to the machine's resolver, off
# loopback (`cargo bench --bench providers` measures them against a resolver on loopback).
if re.search(r'(?m)^\[providers\]', toml):
    toml = re.sub(r'(?m)^\[providers\]\n', '[providers]\nlookup = false\n', toml, count=1)
else:
    toml += '\n[providers]\nlookup = false\n'
open(f"{camp}/campaign.toml", "w").write(toml)
with open(f"{camp}/contacts.csv", "w") as f:
    f.write("email,name,city\n")
    for i in range(n):
        f.write(f"reader{i}@bench{i % 5000}.example,Reader {i},City {i % 97}\n")
PY
size=$("$bin" preview "$camp" --limit 1 2>/dev/null | sed '1d' | wc -c)

now() { date +%s.%N; }
t0=$(now)
smtp-source -d -s "$SESSIONS" -m "$N" -l "$size" -f bench@sender.example -t sink@bench.example \
  "127.0.0.1:$PORT"
t1=$(now)
source_secs=$(python3 -c "print(f'{$t1 - $t0:.1f}')")

t0=$(now)
/usr/bin/time -f "%M" -o "$work/rss" "$bin" send "$camp" --yes >"$work/send.log" 2>"$work/send.err"
t1=$(now)
mailroom_secs=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
accepted=$(grep -c '^accepted' "$work/send.log" || true)
[[ $accepted == "$N" ]] || { echo "bench-million: accepted $accepted of $N" >&2; tail -5 "$work/send.err" >&2; exit 1; }
phase=$(sed -n 's/.* SMTP transactions in \([0-9.]*\) s .*/\1/p' "$work/send.log")
rss_kib=$(cat "$work/rss")
ledger_bytes=$(du -cb "$camp"/mailroom.db* | tail -1 | cut -f1)

python3 - "$N" "$source_secs" "$mailroom_secs" "$phase" "$rss_kib" "$ledger_bytes" "$size" <<'PY'
import sys
n, src, mr, phase, rss, ledger, size = sys.argv[1:]
n, src, mr, phase, rss, ledger = int(n), float(src), float(mr), float(phase), int(rss), int(ledger)
print(f"recipients={n} message={size}B sessions=4")
print(f"smtp-source: {src:.1f} s, {n/src:,.0f} msg/s")
print(f"mailroom send (whole command): {mr:.1f} s, {n/mr:,.0f} msg/s, ratio {src/mr:.2f}")
print(f"  delivery phase: {phase:.1f} s ({n/phase:,.0f} msg/s, ratio {src/phase:.2f}); outside it: {mr-phase:.1f} s")
print(f"  peak RSS: {rss/1024:.0f} MiB; ledger after exit: {ledger/1e6:.0f} MB, {ledger/n:.0f} bytes per recipient")
PY
