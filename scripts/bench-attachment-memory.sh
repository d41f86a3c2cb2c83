#!/usr/bin/env bash
# Peak memory of `mailroom send` with one large attachment to many recipients (issue 15: a 10 MB
# attachment to 1,000 recipients stays under 100 MiB of peak RSS, because the encoded
# attachment is built once and the transport writes a message in 256 KiB slices).
#
# Sends through Postfix's smtp-sink (started by scripts/ci-servers.sh; it accepts and discards
# everything, without TLS, on loopback), with the release binary:
#
#   cargo build --release && bash scripts/bench-attachment-memory.sh
#
# Variables: N (recipients, 1000), SIZE (attachment bytes, 10000000), CONNECTIONS (4),
# MAILROOM_TEST_SMTP_SINK_PORT (2626), BIN (target/release/mailroom).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${BIN:-target/release/mailroom}
port=${MAILROOM_TEST_SMTP_SINK_PORT:-2626}
n=${N:-1000}
size=${SIZE:-10000000}
connections=${CONNECTIONS:-4}
[[ -x $bin ]] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "needs GNU time (/usr/bin/time)" >&2; exit 2; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/files"
head -c "$size" /dev/urandom >"$dir/files/brochure.pdf"
{
  echo "email,name"
  for ((i = 1; i <= n; i++)); do printf 'user%04d@ok.mailroom.test,Reader %d\n' "$i" "$i"; done
} >"$dir/contacts.csv"
printf 'Hello {{name}},\n\nthe brochure is attached.\n' >"$dir/body.txt.hbs"
cat >"$dir/campaign.toml" <<EOF
[campaign]
name = "bench-attachment"
from = "Bench <bench@mailroom.test>"
subject = "Brochure for {{name}}"
text = "body.txt.hbs"
attachments = ["files/brochure.pdf"]

[contacts]
path = "contacts.csv"

[smtp]
host = "127.0.0.1"
port = $port
security = "none"
connections = $connections
data_timeout = 600

[rate]
per_second = 1000000
EOF

/usr/bin/time -v "$bin" send "$dir" --yes >"$dir/out" 2>"$dir/time" || {
  cat "$dir/out" "$dir/time" >&2
  exit 1
}
grep -E "^This run" "$dir/out"
peak_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$dir/time")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$dir/time")
printf 'attachment %d bytes, %d recipients, %d connections: peak RSS %.1f MiB, wall %s\n' \
  "$size" "$n" "$connections" "$(echo "$peak_kb / 1024" | bc -l)" "$wall"
