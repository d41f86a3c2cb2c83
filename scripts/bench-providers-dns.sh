#!/usr/bin/env bash
# Background MX resolution against send throughput, through mailroom's real DNS client: starts an
# unbound on loopback that answers an MX record for each of the bench's 100,000 domains
# (d0.example ... d99999.example; half Google Workspace, half Microsoft 365, as the stand-in
# answers), then runs `cargo bench --bench providers` with MAILROOM_BENCH_DNS pointing at it.
# The DNS server runs on the same two cores as the send, so its own work counts against the
# result (a conservative setting: a real resolver usually runs elsewhere). unbound, not the CI's
# dnsmasq: dnsmasq keeps MX records in a list it scans per query, about 13 ms a query at 100,000
# records, which measures dnsmasq rather than mailroom.
#
# Usage: scripts/bench-providers-dns.sh
# Needs: unbound (Debian package `unbound`; the service need not run), an smtp-sink on
# MAILROOM_TEST_SMTP_SINK_PORT (default 2626, as scripts/ci-servers.sh starts it).
# Knobs: MAILROOM_BENCH_ROUNDS, MAILROOM_BENCH_DOMAINS, DNS_PORT (default 5354), DNS_NICE (the
# DNS server's nice value, default 0: 19 shows what is left when the server only takes idle CPU,
# as a resolver on another machine would), PERF (a command to run the bench under, e.g. perf record).
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$PATH:/usr/sbin"
command -v unbound >/dev/null || { echo "bench-providers-dns: unbound not found" >&2; exit 2; }
n=${MAILROOM_BENCH_DOMAINS:-100000}
port=${DNS_PORT:-5354}
work=$(mktemp -d)
chmod 755 "$work"
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

python3 - "$n" "$port" "$work" >"$work/unbound.conf" <<'PY'
import sys
n, port, work = int(sys.argv[1]), sys.argv[2], sys.argv[3]
print(f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-tcp: yes
    username: ""
    chroot: ""
    directory: "{work}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    local-zone: "example." static""")
for i in range(n):
    host = "aspmx.l.google.com." if i % 2 == 0 else f"d{i}-example.mail.protection.outlook.com."
    print(f'    local-data: "d{i}.example. 3600 IN MX 10 {host}"')
PY
nice -n "${DNS_NICE:-0}" unbound -d -c "$work/unbound.conf" </dev/null >"$work/unbound.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  python3 -c "import dns.resolver as r; x=r.Resolver(configure=False); x.nameservers=['127.0.0.1']; \
x.port=$port; x.lifetime=1; x.resolve('d1.example','MX')" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/unbound.log" >&2; exit 1; }
  sleep 0.1
done

cargo bench --bench providers --no-run --quiet 2>/dev/null
# unbound's own CPU time across the bench: what the DNS server spent answering, on the same cores.
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(ticks)
MAILROOM_BENCH_DNS="127.0.0.1:$port" \
  MAILROOM_TEST_SMTP_SINK_PORT="${MAILROOM_TEST_SMTP_SINK_PORT:-2626}" \
  ${PERF:-} cargo bench --bench providers
after=$(ticks)
echo "unbound CPU during the bench: $(python3 -c "print(($after - $before) / $(getconf CLK_TCK))") s"
