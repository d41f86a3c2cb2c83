-- A smaller ledger per recipient (issue 16: at a million recipients every byte of a row or an
-- index entry is a megabyte). The migration runner turns foreign keys off around this file (a
-- table rebuild cannot run with them on) and checks them before it commits.
--
-- `recipients` is rebuilt without three stored columns:
-- - `message_id` and its index: a message's Message-ID is `<token>.<campaign hash>@<From
--   domain>`, derived from the row's token when the message is rendered; a bounce that quotes it
--   is matched through the token's own unique index. Every Message-ID mailroom has written
--   begins with the token (the format has not changed since the first ledger), so nothing stored
--   is lost.
-- - `domain` is now computed from the address (everything after its `@`: the loader refuses
--   quoted local parts, so a stored address has exactly one) instead of stored; its index and
--   the report counters still have it. `instr`, not a search for the last `@`: reading the
--   column costs about 0.3 µs a row instead of 3 µs (a million-row CSV export reads it for every
--   row).
-- - `accepted_at` was written and never read (the accepted attempt has the time).
--
-- The triggers that name `recipients` are dropped first and created again after (a rename
-- re-checks every trigger, and those on other tables would name a table that is gone), with the
-- same bodies; the update trigger watches the address instead of `domain`, which follows it.
DROP TRIGGER report_counts_insert;
DROP TRIGGER report_counts_update;
DROP TRIGGER report_counts_delete;
DROP TRIGGER report_attempts_insert;
DROP TRIGGER report_events_insert;
DROP TRIGGER report_diagnoses_attempts;
DROP TRIGGER report_diagnoses_events;

CREATE TABLE recipients_slim (
    id                INTEGER PRIMARY KEY,
    campaign_id       INTEGER NOT NULL REFERENCES campaigns(id),
    email             TEXT NOT NULL,
    domain            TEXT NOT NULL
        GENERATED ALWAYS AS (substr(email, instr(email, '@') + 1)) VIRTUAL,
    name              TEXT,
    line              INTEGER NOT NULL,
    token             TEXT NOT NULL UNIQUE,
    fields            TEXT NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending',
    attempts          INTEGER NOT NULL DEFAULT 0,
    retry_at          INTEGER,
    first_attempt_at  INTEGER,
    last_attempt_at   INTEGER,
    last_code         INTEGER,
    last_enhanced     TEXT,
    last_reply        TEXT,
    relay_accepted    INTEGER NOT NULL DEFAULT 0,
    claimed_from      TEXT,
    claimed_run       INTEGER REFERENCES runs(id),
    removed_at        INTEGER,
    UNIQUE (campaign_id, email)
);
INSERT INTO recipients_slim
    (id, campaign_id, email, name, line, token, fields, state, attempts, retry_at,
     first_attempt_at, last_attempt_at, last_code, last_enhanced, last_reply, relay_accepted,
     claimed_from, claimed_run, removed_at)
SELECT id, campaign_id, email, name, line, token, fields, state, attempts, retry_at,
     first_attempt_at, last_attempt_at, last_code, last_enhanced, last_reply, relay_accepted,
     claimed_from, claimed_run, removed_at
FROM recipients ORDER BY id;
DROP TABLE recipients;
ALTER TABLE recipients_slim RENAME TO recipients;
CREATE INDEX recipients_state ON recipients (campaign_id, state, retry_at);
CREATE INDEX recipients_domain ON recipients (campaign_id, domain);

-- The per-domain counters, recounted from the rows (keyed by the computed domain).
DELETE FROM report_counts;
INSERT INTO report_counts (campaign_id, domain, state, relay_accepted, n)
SELECT campaign_id, domain, state, relay_accepted, count(*) FROM recipients
GROUP BY campaign_id, domain, state, relay_accepted;

CREATE TRIGGER report_counts_insert AFTER INSERT ON recipients BEGIN
    INSERT INTO report_counts (campaign_id, domain, state, relay_accepted, n)
    VALUES (NEW.campaign_id, NEW.domain, NEW.state, NEW.relay_accepted, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER report_counts_update
AFTER UPDATE OF campaign_id, email, state, relay_accepted ON recipients
WHEN OLD.campaign_id IS NOT NEW.campaign_id OR OLD.domain IS NOT NEW.domain
    OR OLD.state IS NOT NEW.state OR OLD.relay_accepted IS NOT NEW.relay_accepted
BEGIN
    UPDATE report_counts SET n = n - 1
    WHERE campaign_id = OLD.campaign_id AND domain = OLD.domain AND state = OLD.state
        AND relay_accepted = OLD.relay_accepted;
    INSERT INTO report_counts (campaign_id, domain, state, relay_accepted, n)
    VALUES (NEW.campaign_id, NEW.domain, NEW.state, NEW.relay_accepted, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER report_counts_delete AFTER DELETE ON recipients BEGIN
    UPDATE report_counts SET n = n - 1
    WHERE campaign_id = OLD.campaign_id AND domain = OLD.domain AND state = OLD.state
        AND relay_accepted = OLD.relay_accepted;
END;

CREATE TRIGGER report_attempts_insert AFTER INSERT ON attempts BEGIN
    INSERT INTO report_minutes (campaign_id, minute, outcome, n)
    SELECT campaign_id, NEW.at / 60000, NEW.outcome, 1 FROM recipients
    WHERE id = NEW.recipient_id
    ON CONFLICT DO UPDATE SET n = n + 1;
    INSERT INTO report_reasons (campaign_id, source, status, outcome, n, example)
    SELECT campaign_id, 'attempt', COALESCE(NEW.enhanced, CAST(NEW.code AS TEXT), ''),
        NEW.outcome, 1, NEW.reply
    FROM recipients WHERE id = NEW.recipient_id AND NEW.outcome <> 'accepted'
    ON CONFLICT DO UPDATE SET n = n + 1, example = COALESCE(excluded.example, example);
END;

CREATE TRIGGER report_events_insert AFTER INSERT ON events
WHEN NEW.kind NOT IN ('delivered', 'relayed', 'auto_reply')
BEGIN
    INSERT INTO report_reasons (campaign_id, source, status, outcome, n, example)
    SELECT campaign_id, 'event', COALESCE(NEW.status, ''), NEW.kind, 1,
        COALESCE(NEW.diagnostic, NEW.reason)
    FROM recipients WHERE id = NEW.recipient_id
    ON CONFLICT DO UPDATE SET n = n + 1, example = COALESCE(excluded.example, example);
END;

CREATE TRIGGER report_diagnoses_attempts AFTER INSERT ON attempts
WHEN NEW.diagnosis IS NOT NULL
BEGIN
    INSERT INTO report_diagnoses (campaign_id, diagnosis, n, example)
    SELECT campaign_id, NEW.diagnosis, 1, NEW.reply FROM recipients WHERE id = NEW.recipient_id
    ON CONFLICT DO UPDATE SET n = n + 1, example = COALESCE(excluded.example, example);
END;

CREATE TRIGGER report_diagnoses_events AFTER INSERT ON events
WHEN NEW.diagnosis IS NOT NULL
BEGIN
    INSERT INTO report_diagnoses (campaign_id, diagnosis, n, example)
    SELECT campaign_id, NEW.diagnosis, 1, COALESCE(NEW.diagnostic, NEW.reason)
    FROM recipients WHERE id = NEW.recipient_id
    ON CONFLICT DO UPDATE SET n = n + 1, example = COALESCE(excluded.example, example);
END;

-- A run's `claimed` and `accepted` are counted once, when it finishes, over its own attempts: they
-- are the attempts after the last one that existed when it started (one run at a time holds the
-- send lock), so `runs.first_attempt` bounds that count to a range of the attempts' rowid and the
-- index on every attempt's run goes. Earlier runs get theirs here, while that index still exists
-- (a run without attempts gets the end of the table, so a search from it finds none at once).
ALTER TABLE runs ADD COLUMN first_attempt INTEGER;
UPDATE runs SET first_attempt = coalesce(
    (SELECT min(id) FROM attempts WHERE run_id = runs.id),
    (SELECT coalesce(max(id), 0) + 1 FROM attempts));
DROP INDEX attempts_run;

-- The daily cap and warm-up count accepted attempts since a time; the index on every attempt's
-- (outcome, at) becomes one on the accepted ones' time only.
DROP INDEX attempts_outcome_at;
CREATE INDEX attempts_accepted_at ON attempts (at) WHERE outcome = 'accepted';
