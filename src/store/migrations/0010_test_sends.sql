-- Test sends and seed copies (owner: ops, issue 15). They are not recipients: nothing here ever
-- changes a row of `recipients`, counts in a rate, a daily cap, a warm-up allowance or a report
-- total, or is checked against the suppression list. `report` lists them on their own.
CREATE TABLE test_sends (
    id            INTEGER PRIMARY KEY,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns(id),
    -- The run that sent a seed copy; NULL for `send --test`.
    run_id        INTEGER REFERENCES runs(id),
    -- 'test' (`send --test`) or 'seed' ([seeds], at the start and the end of a run).
    kind          TEXT NOT NULL,
    at            INTEGER NOT NULL,
    address       TEXT NOT NULL,
    -- The contacts row whose message was sent (line and address).
    source_line   INTEGER,
    source_email  TEXT,
    message_id    TEXT NOT NULL,
    port          INTEGER,
    step          TEXT NOT NULL,
    code          INTEGER,
    enhanced      TEXT,
    reply         TEXT,
    -- accepted, deferred, refused, unknown or failed.
    outcome       TEXT NOT NULL
);
CREATE INDEX test_sends_campaign ON test_sends (campaign_id, at);
