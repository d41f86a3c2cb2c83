-- Several relays (owner: relays, issue 16). A campaign may send through several `[[relay]]`
-- entries; every attempt records which one it went through, and every time a relay was taken
-- out of a run for a cool-off is kept, so `report` can show per-relay figures. Attempts from
-- before this migration, and every attempt of a single-`[smtp]` run, have no relay.
CREATE TABLE relays (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE
);
ALTER TABLE attempts ADD COLUMN relay_id INTEGER REFERENCES relays(id);
CREATE INDEX attempts_relay ON attempts (relay_id, at) WHERE relay_id IS NOT NULL;

-- A relay taken out of a run (connection refused, TLS or AUTH failed, "service unavailable"
-- again and again) until `until`; nobody was charged for it.
CREATE TABLE relay_cooloffs (
    id        INTEGER PRIMARY KEY,
    relay_id  INTEGER NOT NULL REFERENCES relays(id),
    run_id    INTEGER REFERENCES runs(id),
    at        INTEGER NOT NULL,
    until     INTEGER NOT NULL,
    reason    TEXT NOT NULL
);
CREATE INDEX relay_cooloffs_run ON relay_cooloffs (run_id);
