-- Deliverability (issue 14; owner: deliv). Adds tables, columns and triggers only.

-- 1. `relayed` events: a DSN saying the message was relayed to (or expanded at) a system that
-- sends no further notice. Like `delivered` and `auto_reply`, an event only: not a reason.
DROP TRIGGER report_events_insert;
CREATE TRIGGER report_events_insert AFTER INSERT ON events
WHEN NEW.kind NOT IN ('delivered', 'relayed', 'auto_reply')
BEGIN
    INSERT INTO report_reasons (campaign_id, source, status, outcome, n, example)
    SELECT campaign_id, 'event', COALESCE(NEW.status, ''), NEW.kind, 1,
        COALESCE(NEW.diagnostic, NEW.reason)
    FROM recipients WHERE id = NEW.recipient_id
    ON CONFLICT DO UPDATE SET n = n + 1, example = COALESCE(excluded.example, example);
END;

-- 2. Diagnoses: what a provider's reply or DSN text means (the key of a row of mailroom's
-- diagnosis table, `src/diagnose.rs`, decided when the reply or report is recorded). Counted per
-- campaign by triggers, as the reasons are, with the latest text as the example.
ALTER TABLE attempts ADD COLUMN diagnosis TEXT;
ALTER TABLE events ADD COLUMN diagnosis TEXT;

CREATE TABLE report_diagnoses (
    campaign_id  INTEGER NOT NULL,
    diagnosis    TEXT NOT NULL,
    n            INTEGER NOT NULL,
    example      TEXT,
    PRIMARY KEY (campaign_id, diagnosis)
) WITHOUT ROWID;

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

-- Drill-down by diagnosis; only the few rows that have one are indexed.
CREATE INDEX attempts_diagnosis ON attempts (diagnosis) WHERE diagnosis IS NOT NULL;
CREATE INDEX events_diagnosis ON events (diagnosis) WHERE diagnosis IS NOT NULL;

-- 3. Mailbox providers: what each recipient domain's MX says about who hosts its mail, cached
-- with the DNS answer's TTL (`expires_at`). `provider` is a `provider::Provider` name; `mx` the
-- preferred exchange (NULL when the lookup failed or found none).
CREATE TABLE domain_providers (
    domain      TEXT PRIMARY KEY,
    mx          TEXT,
    provider    TEXT NOT NULL,
    checked_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
