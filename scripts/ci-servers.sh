#!/usr/bin/env bash
# Starts the real mail servers that mailroom's integration tests talk to, on 127.0.0.1 only:
#   - Postfix with a submission port (STARTTLS required + SASL AUTH), an implicit-TLS port with
#     AUTH, a plain port-25-style inbound listener (STARTTLS optional, no AUTH), and test domains
#     with fixed behaviours (deliver to Maildirs, 550 5.1.1, 451, 452, accept-then-DSN, VERP bounces);
#   - a standalone Dovecot used only as Postfix's SASL backend (passwd-file, one generated user);
#   - Postfix's smtp-sink on its own port for benchmarks;
#   - dnsmasq (Debian's dnsmasq-base: the binary alone, no service taking port 53 or editing
#     resolv.conf) on a loopback port, serving the DNS fixture zones of tests/fixtures/dns/ with
#     the DKIM key records of tests/fixtures/dkim/ filled in at start time;
#   - python3-dkim (with python3-nacl for Ed25519) as the independent DKIM verifier.
# A throwaway CA and server certificate are made at run time. Outbound mail is impossible:
# every non-test destination fails locally (default_transport = error) and DNS is off.
#
# Usage (as root, Debian 12):
#   source scripts/ci-servers.sh        # sets up, then exports MAILROOM_TEST_* into this shell
#   bash scripts/ci-servers.sh          # sets up and prints the exports
#   source scripts/ci-servers-env.sh    # only exports (servers already running)
# Re-running is safe: services are stopped, configuration regenerated, Maildirs and queue emptied
# (set MAILROOM_CI_KEEP_MAIL=1 to keep mail), then services are started again.
# Knobs (environment): MAILROOM_CI_DIR (state, default /tmp/mailroom-ci), MAILROOM_CI_*_PORT.
# docs/testing.md lists every exported variable.

_mailroom_ci_setup() (
  set -euo pipefail
  umask 022

  local dir="${MAILROOM_CI_DIR:-/tmp/mailroom-ci}"
  local host=127.0.0.1
  local submission_port="${MAILROOM_CI_SUBMISSION_PORT:-587}"
  local smtps_port="${MAILROOM_CI_SMTPS_PORT:-465}"
  local smtp_port="${MAILROOM_CI_SMTP_PORT:-25}"
  local sink_port="${MAILROOM_CI_SINK_PORT:-2626}"
  local dns_port="${MAILROOM_CI_DNS_PORT:-5353}"
  local repo
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local user_name="sender@mailroom.test"
  local d_ok=ok.mailroom.test d_451=defer451.mailroom.test d_452=defer452.mailroom.test
  local d_dsn=dsn.mailroom.test d_bounces=bounces.mailroom.test
  local started=$SECONDS

  say() { printf 'ci-servers: %s\n' "$*" >&2; }
  die() {
    printf 'ci-servers: FAILED: %s\n' "$*" >&2
    for log in /var/log/mail.log "$dir/dovecot/dovecot.log" "$dir/smtp-sink.log" "$dir/dns/dnsmasq.log"; do
      [[ -f $log ]] && { printf -- '--- last lines of %s\n' "$log" >&2; tail -n 30 "$log" >&2; }
    done
    exit 1
  }
  trap 'die "command failed at line $LINENO: $BASH_COMMAND"' ERR

  local p
  for p in "$submission_port" "$smtps_port" "$smtp_port" "$sink_port" "$dns_port"; do
    [[ $p =~ ^[0-9]+$ ]] && ((p >= 1 && p <= 65535)) || die "port '$p' is not a number in 1-65535"
  done
  [[ $(id -u) == 0 ]] || die "must run as root (Postfix binds ports and switches users)"

  # --- packages: skip apt entirely when everything is already installed -------------------------
  local missing=()
  command -v postfix >/dev/null || missing+=(postfix)
  command -v dovecot >/dev/null || missing+=(dovecot-core)
  # The bounce import's IMAP test runs its own private Dovecot IMAP server.
  [[ -x /usr/lib/dovecot/imap ]] || missing+=(dovecot-imapd)
  # The `send --dashboard` test drives the real TUI in a tmux terminal.
  command -v tmux >/dev/null || missing+=(tmux)
  # swaks is for checking by hand; it needs Net::SSLeay for STARTTLS.
  command -v swaks >/dev/null || missing+=(swaks)
  perl -MNet::SSLeay -e 1 2>/dev/null || missing+=(libnet-ssleay-perl)
  command -v openssl >/dev/null || missing+=(openssl)
  # The DNS fixture server: dnsmasq-base is the binary without the service (the `dnsmasq`
  # package would start one on port 53 and take over the machine's resolver).
  command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
  # The independent DKIM verifier, through Debian's own python3 (another python3 may come first
  # on PATH without these modules).
  /usr/bin/python3 -c 'import dkim, nacl, dns.resolver' 2>/dev/null || missing+=(python3-dkim python3-nacl python3-dnspython)
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    printf '%s\n' 'postfix postfix/main_mailer_type select No configuration' \
      'postfix postfix/mailname string mx.mailroom.test' | debconf-set-selections
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold \
      "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  fi

  # --- stop what a previous run started -------------------------------------------------------
  if postfix status >/dev/null 2>&1; then
    postfix stop >/dev/null 2>&1 || true
  fi
  # A pid file can outlive its process (the machine or CI killed it) and the pid be reused:
  # only signal a process that is still the program we started.
  ours() { [[ -s $1 ]] && [[ $(cat "/proc/$(cat "$1")/comm" 2>/dev/null) == "$2" ]]; }
  local dovecot_pid=
  if ours "$dir/dovecot/run/master.pid" dovecot; then
    dovecot_pid=$(cat "$dir/dovecot/run/master.pid")
    kill "$dovecot_pid" 2>/dev/null || dovecot_pid=
  fi
  rm -f "$dir/dovecot/run/master.pid"
  if ours "$dir/smtp-sink.pid" smtp-sink; then
    kill "$(cat "$dir/smtp-sink.pid")" 2>/dev/null || true
  fi
  rm -f "$dir/smtp-sink.pid"
  local dnsmasq_pid=
  if ours "$dir/dns/dnsmasq.pid" dnsmasq; then
    dnsmasq_pid=$(cat "$dir/dns/dnsmasq.pid")
    kill "$dnsmasq_pid" 2>/dev/null || dnsmasq_pid=
  fi
  rm -f "$dir/dns/dnsmasq.pid"
  local i
  for ((i = 0; i < 100; i++)); do
    postfix status >/dev/null 2>&1 || break
    sleep 0.1
  done
  postfix status >/dev/null 2>&1 && die "postfix from a previous run did not stop"
  for ((i = 0; i < 100; i++)); do
    [[ -n $dovecot_pid ]] && kill -0 "$dovecot_pid" 2>/dev/null || break
    sleep 0.1
  done
  for ((i = 0; i < 100; i++)); do
    [[ -n $dnsmasq_pid ]] && kill -0 "$dnsmasq_pid" 2>/dev/null || break
    sleep 0.1
  done

  # --- state layout -------------------------------------------------------------------------------
  mkdir -p "$dir"/{tls,postfix,dovecot/run,dovecot/state,bin,mail,dns}
  chmod 755 "$dir" "$dir/bin" "$dir/postfix"

  # The user that owns delivered mail: the invoking developer under sudo (so they can read it),
  # else a dedicated system user (root, which runs the tests in CI, reads it anyway).
  local mail_uid mail_gid
  if [[ -n ${MAILROOM_CI_MAIL_UID:-} ]]; then
    mail_uid=$MAILROOM_CI_MAIL_UID
    mail_gid=${MAILROOM_CI_MAIL_GID:-$MAILROOM_CI_MAIL_UID}
  elif [[ -n ${SUDO_UID:-} && ${SUDO_UID:-0} != 0 ]]; then
    mail_uid=$SUDO_UID
    mail_gid=${SUDO_GID:-$SUDO_UID}
  else
    getent passwd mailroom-vmail >/dev/null ||
      useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mailroom-vmail
    mail_uid=$(id -u mailroom-vmail)
    mail_gid=$(id -g mailroom-vmail)
  fi
  if [[ ${MAILROOM_CI_KEEP_MAIL:-0} != 1 ]]; then
    # Tens of thousands of old messages take long to delete on a busy machine: move them aside
    # and delete them in the background.
    if [[ -d $dir/mail ]]; then
      mv "$dir/mail" "$dir/mail.old.$$.$RANDOM"
      setsid rm -rf "$dir"/mail.old.* </dev/null >/dev/null 2>&1 &
    fi
    mkdir -p "$dir/mail"
  fi
  # Pre-create the shared Maildirs so tests can watch them before the first message arrives.
  local md
  for md in "$dir/mail/$d_bounces/bounces" "$dir/mail/$d_ok/postmaster"; do
    mkdir -p "$md"/{new,cur,tmp}
  done
  chown -R "$mail_uid:$mail_gid" "$dir/mail"
  chmod -R u+rwX,go+rX "$dir/mail"

  # --- throwaway CA + server certificate (kept while valid for another day) -------------------
  if ! { [[ -s $dir/tls/ca.pem && -s $dir/tls/server.pem && -s $dir/tls/server.key ]] &&
    openssl x509 -checkend 86400 -noout -in "$dir/tls/server.pem" >/dev/null 2>&1; }; then
    say "making a test CA and server certificate"
    (
      cd "$dir/tls"
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 30 -subj "/CN=mailroom CI test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
      printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
        'keyUsage=critical,digitalSignature,keyEncipherment' \
        'extendedKeyUsage=serverAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1' >server.ext
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 30 -extfile server.ext 2>/dev/null
      chmod 600 ca.key server.key
      chmod 644 ca.pem server.pem
    ) || die "could not make the test certificates"
  fi

  # --- SASL: a standalone Dovecot that only authenticates -------------------------------------
  local password
  if [[ -s $dir/password ]]; then
    password=$(cat "$dir/password")
  else
    password=$(openssl rand -hex 16)
    (umask 077 && printf '%s' "$password" >"$dir/password")
  fi
  (umask 077 && printf '%s:{PLAIN}%s\n' "$user_name" "$password" >"$dir/dovecot/users")
  chown root:dovecot "$dir/dovecot/users" 2>/dev/null || true
  chmod 640 "$dir/dovecot/users"
  cat >"$dir/dovecot/dovecot.conf" <<EOF
# Generated by scripts/ci-servers.sh: SASL backend for the test Postfix only.
protocols = none
base_dir = $dir/dovecot/run
state_dir = $dir/dovecot/state
log_path = $dir/dovecot/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/dovecot/users
}
userdb {
  driver = static
  args = uid=$mail_uid gid=$mail_gid home=/nonexistent
}
service auth {
  unix_listener /var/spool/postfix/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF

  # --- Postfix ----------------------------------------------------------------------------------
  # A permanent local failure for the DSN domain: pipe(8) maps exit 67 (EX_NOUSER) to 5.1.1, so
  # Postfix accepts at RCPT and then returns a real RFC 3464 DSN to the envelope sender.
  # What it prints becomes the DSN's Diagnostic-Code (x-unix; ...), as a real mailbox server's would.
  printf '#!/bin/sh\n# Refuses every message as "user unknown" after Postfix accepted it.\ncat >/dev/null\necho "mailbox unavailable: no such user here (mailroom CI)"\nexit 67\n' \
    >"$dir/bin/refuse-67"
  chmod 755 "$dir/bin/refuse-67"

  local pf=$dir/postfix
  {
    echo "# Generated by scripts/ci-servers.sh: mailbox per user under $dir/mail/<domain>/<user>/"
    for u in alice bob carol dave erin postmaster; do
      echo "$u@$d_ok $d_ok/$u/"
    done
    for ((i = 1; i <= 5000; i++)); do
      printf 'user%04d@%s %s/user%04d/\n' "$i" "$d_ok" "$d_ok" "$i"
    done
    echo "bounces@$d_bounces $d_bounces/bounces/"
  } >"$pf/vmailbox.new"
  printf '%s\n' "$d_dsn refuse67:" >"$pf/transport.new"
  printf '%s\n' \
    "$d_451 451 4.3.0 mailroom CI: $d_451 always defers, try again later" \
    "$d_452 452 4.2.2 mailroom CI: mailbox full (insufficient storage at $d_452)" \
    >"$pf/recipient_access.new"

  cat >/etc/postfix/main.cf <<EOF
# Generated by scripts/ci-servers.sh (mailroom CI). Loopback only, no DNS, no outbound mail.
compatibility_level = 3.6
maillog_file = /var/log/mail.log
myhostname = mx.mailroom.test
mydomain = mailroom.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
inet_interfaces = $host
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
default_transport = error:5.7.1 mailroom CI: outbound mail is disabled
relay_transport = error:5.7.1 mailroom CI: outbound mail is disabled

virtual_mailbox_domains = $d_ok, $d_bounces
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = hash:$pf/vmailbox
virtual_uid_maps = static:$mail_uid
virtual_gid_maps = static:$mail_gid
virtual_minimum_uid = 1
recipient_delimiter = +
relay_domains = $d_dsn, $d_451, $d_452
transport_maps = hash:$pf/transport

smtpd_banner = \$myhostname ESMTP mailroom CI Postfix
smtpd_tls_cert_file = $dir/tls/server.pem
smtpd_tls_key_file = $dir/tls/server.key
smtpd_tls_security_level = may
smtpd_tls_loglevel = 0
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_auth_enable = no
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access hash:$pf/recipient_access

# Load tests: no throttling, no tarpit, no disconnect after many rejections.
in_flow_delay = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100000
smtpd_hard_error_limit = 100000
smtpd_junk_command_limit = 100000
smtpd_recipient_overshoot_limit = 100000
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_client_auth_rate_limit = 0
default_process_limit = 100
refuse67_destination_recipient_limit = 1
EOF

  local mua="-o smtpd_sasl_auth_enable=yes -o smtpd_client_restrictions=permit_sasl_authenticated,reject"
  cat >/etc/postfix/master.cf <<EOF
# Generated by scripts/ci-servers.sh (mailroom CI).
# service          type  private unpriv chroot wakeup maxproc command
$host:$smtp_port   inet  n       -      n      -      20      smtpd
$host:$submission_port inet n    -      n      -      20      smtpd
  -o syslog_name=postfix/submission -o smtpd_tls_security_level=encrypt -o smtpd_tls_auth_only=yes $mua
$host:$smtps_port  inet  n       -      n      -      20      smtpd
  -o syslog_name=postfix/smtps -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt $mua
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
refuse67   unix  -       n       n       -       -       pipe
  flags=q user=nobody argv=$dir/bin/refuse-67
EOF

  local map
  for map in vmailbox transport recipient_access; do
    # postmap of 5,000 users takes a second or two: only rebuild what changed.
    if cmp -s "$pf/$map.new" "$pf/$map" && [[ -s $pf/$map.db ]]; then
      rm -f "$pf/$map.new"
    else
      mv -f "$pf/$map.new" "$pf/$map"
      postmap "hash:$pf/$map"
    fi
  done
  touch /var/log/mail.log
  postfix check >/dev/null 2>&1 || { postfix check || true; die "postfix check failed"; }
  if [[ ${MAILROOM_CI_KEEP_MAIL:-0} != 1 ]]; then
    postsuper -d ALL >/dev/null 2>&1 || true
  fi

  # Dovecot needs Postfix's private/ directory (made by `postfix check`) for its socket.
  # Daemons must not keep the caller's stdout/stderr open: a CI harness reading them until EOF
  # would wait forever.
  dovecot -c "$dir/dovecot/dovecot.conf" </dev/null >>"$dir/dovecot/dovecot.log" 2>&1 ||
    die "dovecot did not start"
  postfix start </dev/null >/dev/null 2>&1 || die "postfix did not start"

  # smtp-sink: accepts and discards everything, for benchmarks. Detached so it outlives us.
  setsid smtp-sink -u nobody -c "$host:$sink_port" 1024 </dev/null >"$dir/smtp-sink.log" 2>&1 &
  echo $! >"$dir/smtp-sink.pid"

  # --- DNS: the fixture zones on a loopback port ------------------------------------------------
  # A key's record as dnsmasq TXT strings: "v=DKIM1; k=...; p=..." in 255-byte pieces. RSA's p=
  # is the SubjectPublicKeyInfo; Ed25519's the raw 32-byte key (the last 32 bytes of its SPKI).
  dkim_txt() {
    local key=$1 k p
    if openssl pkey -in "$key" -noout -text 2>/dev/null | head -n 1 | grep -qi ed25519; then
      k=ed25519
      p=$(openssl pkey -in "$key" -pubout -outform DER | tail -c 32 | base64 -w 0)
    else
      k=rsa
      p=$(openssl pkey -in "$key" -pubout -outform DER | base64 -w 0)
    fi
    printf 'v=DKIM1; k=%s; p=%s' "$k" "$p" | fold -w 255 | sed 's/.*/"&"/' | paste -sd, -
  }
  cp "$repo/tests/fixtures/dns/zones.conf" "$dir/dns/zones.conf.new"
  local key name
  for key in "$repo"/tests/fixtures/dkim/*.pem; do
    name=$(basename "$key" .pem)
    grep -q "@$name@" "$dir/dns/zones.conf.new" || continue
    sed -i "s|@$name@|$(dkim_txt "$key")|g" "$dir/dns/zones.conf.new"
  done
  if grep -q '@[a-z0-9-]*@' "$dir/dns/zones.conf.new"; then
    die "a DNS fixture names a key that tests/fixtures/dkim/ lacks"
  fi
  mv -f "$dir/dns/zones.conf.new" "$dir/dns/zones.conf"
  printf '%s\n' "# Generated by scripts/ci-servers.sh: the DNS fixture zones, loopback only, no upstream." \
    "port=$dns_port" "listen-address=$host" bind-interfaces no-resolv no-hosts no-poll \
    "pid-file=$dir/dns/dnsmasq.pid" "log-facility=$dir/dns/dnsmasq.log" \
    "conf-file=$dir/dns/zones.conf" >"$dir/dns/dnsmasq.conf"
  dnsmasq --test --conf-file="$dir/dns/dnsmasq.conf" >/dev/null 2>&1 ||
    die "dnsmasq rejects $dir/dns/dnsmasq.conf: $(dnsmasq --test --conf-file="$dir/dns/dnsmasq.conf" 2>&1)"
  dnsmasq --conf-file="$dir/dns/dnsmasq.conf" </dev/null >/dev/null 2>&1 || die "dnsmasq did not start"

  # --- wait until every listener answers (bounded) ----------------------------------------------
  local port deadline=$((SECONDS + 30))
  for port in "$submission_port" "$smtps_port" "$smtp_port" "$sink_port"; do
    until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
      ((SECONDS < deadline)) || die "nothing accepts connections on $host:$port after 30 s"
      sleep 0.1
    done
  done
  local dns_probe='import sys, dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers, r.port, r.lifetime = [sys.argv[1]], int(sys.argv[2]), 1
assert any(b"spf1" in b"".join(a.strings) for a in r.resolve("pass.test", "TXT"))'
  until /usr/bin/python3 -c "$dns_probe" "$host" "$dns_port" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "the DNS fixture server on $host:$dns_port does not answer for pass.test"
    sleep 0.1
  done
  until [[ -S /var/spool/postfix/private/auth ]]; do
    ((SECONDS < deadline)) || die "dovecot's auth socket /var/spool/postfix/private/auth never appeared"
    sleep 0.1
  done
  # Make sure it is OUR servers answering (not another MTA already on those ports): check the
  # plaintext greetings.
  local expect banner
  for port in "$submission_port" "$smtp_port" "$sink_port"; do
    expect="mailroom CI Postfix"
    [[ $port == "$sink_port" ]] && expect="smtp-sink"
    banner=$(
      exec 3<>"/dev/tcp/$host/$port" || exit 0
      IFS= read -r -t 10 line <&3 || true
      printf 'QUIT\r\n' >&3 || true
      printf '%s' "${line%$'\r'}"
    )
    [[ $banner == *"$expect"* ]] ||
      die "$host:$port greets with '${banner:-nothing}', not '$expect': is another server on that port?"
  done

  cat >"$dir/env.sh" <<EOF
# Generated by scripts/ci-servers.sh; \`source\` it to point mailroom's tests at these servers.
export MAILROOM_TEST_POSTFIX_HOST=$host
export MAILROOM_TEST_POSTFIX_SUBMISSION_PORT=$submission_port
export MAILROOM_TEST_POSTFIX_SMTPS_PORT=$smtps_port
export MAILROOM_TEST_POSTFIX_SMTP_PORT=$smtp_port
export MAILROOM_TEST_SMTP_SINK_PORT=$sink_port
export MAILROOM_TEST_POSTFIX_CA=$dir/tls/ca.pem
export MAILROOM_TEST_POSTFIX_USER=$user_name
export MAILROOM_TEST_POSTFIX_PASSWORD=$password
export MAILROOM_TEST_POSTFIX_MAILDIR_ROOT=$dir/mail
export MAILROOM_TEST_POSTFIX_BOUNCE_MAILDIR=$dir/mail/$d_bounces/bounces
export MAILROOM_TEST_POSTFIX_LOG=/var/log/mail.log
export MAILROOM_TEST_DOMAIN_OK=$d_ok
export MAILROOM_TEST_UNKNOWN_USER=nosuchuser@$d_ok
export MAILROOM_TEST_DOMAIN_DEFER451=$d_451
export MAILROOM_TEST_DOMAIN_DEFER452=$d_452
export MAILROOM_TEST_DOMAIN_DSN=$d_dsn
export MAILROOM_TEST_DOMAIN_BOUNCES=$d_bounces
export MAILROOM_TEST_BOUNCE_RETURN_PATH='bounces+{token}@$d_bounces'
export MAILROOM_TEST_DNS=$host:$dns_port
EOF
  say "ready in $((SECONDS - started)) s: submission $host:$submission_port, smtps $host:$smtps_port, smtp $host:$smtp_port, smtp-sink $host:$sink_port, dns $host:$dns_port; env in $dir/env.sh"
)

# A plain statement, not an `if` condition: bash ignores `set -e` inside functions called from a
# condition. Under the caller's `set -e` (CI) a failure stops the caller right here.
_mailroom_ci_setup
_mailroom_ci_rc=$?
unset -f _mailroom_ci_setup
if ((_mailroom_ci_rc != 0)); then
  unset _mailroom_ci_rc
  return 1 2>/dev/null || exit 1
fi
unset _mailroom_ci_rc
# shellcheck disable=SC1091
source "${MAILROOM_CI_DIR:-/tmp/mailroom-ci}/env.sh"
# Executed rather than sourced: print the exports so the caller can eval or copy them.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  grep '^export ' "${MAILROOM_CI_DIR:-/tmp/mailroom-ci}/env.sh"
fi
