#!/usr/bin/env bash
# How fast one real Postfix takes mail from `mailroom send` over submission (587, STARTTLS and
# AUTH, the way a relay is used), against Postfix's own load generator smtp-source sending as many
# messages of the same size to the same Postfix's port 25 (no TLS, no AUTH: smtp-source has
# neither) in the same run. Both count the relay's 250 after DATA ("accepted by the relay", queued
# for local delivery), not delivery.
#
# Needs the CI rig: `source scripts/ci-servers.sh` (as root) first, and a release build.
# Usage: bash scripts/bench-postfix.sh
# Knobs: N (messages, default 3000, at most 5000: the rig's mailboxes), SESSIONS (4).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-3000}
SESSIONS=${SESSIONS:-4}
bin=${BIN:-target/release/mailroom}
: "${MAILROOM_TEST_POSTFIX_HOST:?source scripts/ci-servers.sh first}"
host=$MAILROOM_TEST_POSTFIX_HOST
ok=$MAILROOM_TEST_DOMAIN_OK
((N <= 5000)) || { echo "bench-postfix: N is at most 5000" >&2; exit 2; }
[[ -x $bin ]] || cargo build --release --quiet

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
camp=$work/bench
"$bin" init "$camp" >/dev/null
python3 - "$camp" "$N" "$SESSIONS" "$host" "$MAILROOM_TEST_POSTFIX_SUBMISSION_PORT" \
  "$MAILROOM_TEST_POSTFIX_USER" "$MAILROOM_TEST_POSTFIX_CA" "$ok" <<'EOF'
import re, sys
camp, n, sessions, host, port, user, ca, ok = sys.argv[1:9]
toml = open(f"{camp}/campaign.toml").read()
toml = re.sub(r'(?m)^name = .*$', 'name = "bench"', toml, count=1)
toml = re.sub(r'(?m)^from = .*$', f'from = "Bench <{user}>"', toml, count=1)
smtp = (f'[smtp]\nhost = "{host}"\nport = {port}\nsecurity = "starttls"\n'
        f'username = "{user}"\npassword_env = "MAILROOM_TEST_POSTFIX_PASSWORD"\n'
        f'ca_file = "{ca}"\nhello_name = "client.mailroom.test"\n'
        f'connections = {sessions}\nmessages_per_connection = 1000\n')
toml = re.sub(r'(?ms)^\[smtp\].*?(?=^\[rate\])', smtp + '\n', toml)
toml = re.sub(r'(?ms)^\[rate\].*?(?=^\[retry\])', '[rate]\nper_second = 1000000\n\n', toml)
if re.search(r'(?m)^\[providers\]', toml):
    toml = re.sub(r'(?m)^\[providers\]\n', '[providers]\nlookup = false\n', toml, count=1)
else:
    toml += '\n[providers]\nlookup = false\n'
open(f"{camp}/campaign.toml", "w").write(toml)
with open(f"{camp}/contacts.csv", "w") as f:
    f.write("email,name,city\n")
    for i in range(int(n)):
        f.write(f"user{i + 1:04d}@{ok},Reader {i},City {i % 97}\n")
EOF
size=$("$bin" preview "$camp" --limit 1 2>/dev/null | sed '1d' | wc -c)
now() { date +%s.%N; }

t0=$(now)
smtp-source -s "$SESSIONS" -m "$N" -l "$size" -f "$MAILROOM_TEST_POSTFIX_USER" \
  -t "user5000@$ok" "$host:$MAILROOM_TEST_POSTFIX_SMTP_PORT"
t1=$(now)
source_rate=$(python3 -c "print(round($N / ($t1 - $t0)))")

t0=$(now)
"$bin" send "$camp" --yes >"$work/send.log" 2>"$work/send.err" || true
t1=$(now)
accepted=$(grep -c '^accepted' "$work/send.log" || true)
if [[ $accepted != "$N" ]]; then
  echo "bench-postfix: Postfix accepted $accepted of $N" >&2
  tail -5 "$work/send.err" >&2; tail -5 "$work/send.log" >&2
  exit 1
fi
rate=$(python3 -c "print(round($N / ($t1 - $t0)))")
phase=$(sed -n 's/.* SMTP transactions in \([0-9.]*\) s .*/\1/p' "$work/send.log")
delivery=$(python3 -c "print(round($N / $phase))")
echo "messages=$N sessions=$SESSIONS size=${size}B" \
  "smtp-source to port 25 (plain)=${source_rate}/s" \
  "mailroom send to 587 (STARTTLS+AUTH) whole command=${rate}/s" \
  "delivery phase=${delivery}/s" \
  "ratio whole=$(python3 -c "print(f'{$rate / $source_rate:.2f}')")" \
  "ratio delivery=$(python3 -c "print(f'{$delivery / $source_rate:.2f}')")"
