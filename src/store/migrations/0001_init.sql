-- The ledger schema. Never edit a migration after it has landed on main; add the next file.
-- Times are Unix milliseconds (UTC). Addresses are stored normalised (domain lower-cased, IDN as
-- punycode), so equality is plain string equality.

CREATE TABLE campaigns (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- One row per `mailroom send` invocation: which relay and port it actually used, how it ended.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    campaign_id  INTEGER NOT NULL REFERENCES campaigns(id),
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    host         TEXT NOT NULL,
    port         INTEGER,
    security     TEXT,
    outcome      TEXT
);

-- One row per recipient of a campaign; `state` is its one current state (model::DeliveryState).
CREATE TABLE recipients (
    id                INTEGER PRIMARY KEY,
    campaign_id       INTEGER NOT NULL REFERENCES campaigns(id),
    email             TEXT NOT NULL,
    domain            TEXT NOT NULL,
    name              TEXT,
    line              INTEGER NOT NULL,
    token             TEXT NOT NULL UNIQUE,
    message_id        TEXT NOT NULL,
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
    accepted_at       INTEGER,
    UNIQUE (campaign_id, email)
);
CREATE INDEX recipients_state ON recipients (campaign_id, state, retry_at);
CREATE INDEX recipients_domain ON recipients (campaign_id, domain, state);
CREATE INDEX recipients_message_id ON recipients (message_id);

-- Every SMTP attempt, appended and never updated: the evidence behind each state.
CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY,
    recipient_id  INTEGER NOT NULL REFERENCES recipients(id),
    run_id        INTEGER REFERENCES runs(id),
    at            INTEGER NOT NULL,
    port          INTEGER,
    step          TEXT NOT NULL,
    code          INTEGER,
    enhanced      TEXT,
    reply         TEXT,
    outcome       TEXT NOT NULL
);
CREATE INDEX attempts_recipient ON attempts (recipient_id);
CREATE INDEX attempts_at ON attempts (at);

-- Feedback that arrives later by mail: DSNs, complaints, auto-replies. `fingerprint` makes a
-- second import of the same mailbox a no-op.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    recipient_id  INTEGER REFERENCES recipients(id),
    at            INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    action        TEXT,
    status        TEXT,
    reason        TEXT,
    diagnostic    TEXT,
    remote_mta    TEXT,
    source        TEXT NOT NULL,
    fingerprint   TEXT NOT NULL UNIQUE
);
CREATE INDEX events_recipient ON events (recipient_id);

-- Addresses never to be mailed again, across campaigns.
CREATE TABLE suppressions (
    email       TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL,
    campaign    TEXT,
    created_at  INTEGER NOT NULL
);
