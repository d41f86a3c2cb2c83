#!/usr/bin/env bash
# Exports the MAILROOM_TEST_* variables of servers that scripts/ci-servers.sh already started,
# without touching them: `source scripts/ci-servers-env.sh` in a new shell, then `cargo test`.
_mailroom_ci_env="${MAILROOM_CI_DIR:-/tmp/mailroom-ci}/env.sh"
if [[ -r $_mailroom_ci_env ]]; then
  # shellcheck disable=SC1090
  source "$_mailroom_ci_env"
  unset _mailroom_ci_env
else
  printf 'ci-servers-env: %s is missing: run `sudo bash scripts/ci-servers.sh` first\n' "$_mailroom_ci_env" >&2
  unset _mailroom_ci_env
  return 1 2>/dev/null || exit 1
fi
