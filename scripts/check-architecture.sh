#!/usr/bin/env bash
# Architecture rules CI enforces (run by .ci/run before the tests; also fine by hand):
#   1. The ledger has one door: `rusqlite` appears only under src/store*.
#   2. No SQL statement lives outside src/store*: no string literal in src/ that starts with an
#      SQL verb (SELECT, INSERT, UPDATE, DELETE, PRAGMA, CREATE, DROP, ALTER, WITH, REPLACE,
#      BEGIN, COMMIT, VACUUM, ATTACH).
#   3. No source file in src/ has more than 1,000 lines before its #[cfg(test)] module, except
#      the bounce data tables (src/bounce/keywords.rs, src/bounce/rhost.rs; reason.rs held them
#      before they moved to keywords.rs).
# Exit status 1 with every violation listed.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
complain() {
  printf 'check-architecture: %s\n' "$*" >&2
  status=1
}

outside_store() { grep -vE '^src/store(\.rs|/)' || true; }

while IFS= read -r file; do
  [[ -n $file ]] && complain "$file uses rusqlite: only src/store may (call a typed store function instead)"
done < <(grep -rl 'rusqlite' src | outside_store)

verbs='SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE|DROP|ALTER|WITH|REPLACE|BEGIN|COMMIT|VACUUM|ATTACH'
while IFS= read -r hit; do
  [[ -n $hit ]] && complain "SQL outside src/store: $hit"
done < <(grep -rnE "(^|[^\\])\"[[:space:]]*($verbs)[[:space:]]" src --include='*.rs' | outside_store)

data_tables='^src/bounce/(reason|rhost|keywords)\.rs$'
while IFS= read -r file; do
  lines=$(awk '/^#\[cfg\(test\)\]/ { exit } { n++ } END { print n + 0 }' "$file")
  if ((lines > 1000)) && [[ ! $file =~ $data_tables ]]; then
    complain "$file has $lines lines before its tests (limit 1000): split it by what its parts own"
  fi
done < <(find src -name '*.rs' | sort)

exit "$status"
