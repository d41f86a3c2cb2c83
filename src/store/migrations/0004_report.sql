-- Counters for reports and the dashboard, maintained by triggers so that reading a campaign's
-- numbers costs a scan of a few hundred rows instead of every recipient and attempt (the
-- dashboard refreshes twice a second over ledgers of a million recipients). Writers never touch
-- these tables directly; the triggers keep them exact inside the writer's own transaction.
-- `n` may reach 0 and the row stays: readers filter `n > 0`.

-- One row per campaign × domain × state × relay_accepted: totals, the funnel and the domain
-- table are sums over it.
CREATE TABLE report_counts (
    campaign_id     INTEGER NOT NULL,
    domain          TEXT NOT NULL,
    state           TEXT NOT NULL,
    relay_accepted  INTEGER NOT NULL,
    n               INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, domain, state, relay_accepted)
) WITHOUT ROWID;

INSERT INTO report_counts (campaign_id, domain, state, relay_accepted, n)
SELECT campaign_id, domain, state, relay_accepted, count(*)
FROM recipients GROUP BY campaign_id, domain, state, relay_accepted;

CREATE TRIGGER report_counts_insert AFTER INSERT ON recipients BEGIN
    INSERT INTO report_counts (campaign_id, domain, state, relay_accepted, n)
    VALUES (NEW.campaign_id, NEW.domain, NEW.state, NEW.relay_accepted, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER report_counts_update
AFTER UPDATE OF campaign_id, domain, state, relay_accepted ON recipients
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

-- Attempts per campaign × minute × outcome: the sends-per-minute series.
CREATE TABLE report_minutes (
    campaign_id  INTEGER NOT NULL,
    minute       INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, minute, outcome)
) WITHOUT ROWID;

INSERT INTO report_minutes (campaign_id, minute, outcome, n)
SELECT r.campaign_id, a.at / 60000, a.outcome, count(*)
FROM attempts a JOIN recipients r ON r.id = a.recipient_id
GROUP BY r.campaign_id, a.at / 60000, a.outcome;

-- Non-accepted attempts and negative feedback per campaign × source × status code × outcome:
-- the reasons table. `status` is the enhanced code, else the basic code, else '' (no reply).
-- `example` is the latest reply or diagnostic text seen with it (kept here because finding one
-- by query would walk every attempt with that code).
CREATE TABLE report_reasons (
    campaign_id  INTEGER NOT NULL,
    source       TEXT NOT NULL,
    status       TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    n            INTEGER NOT NULL,
    example      TEXT,
    PRIMARY KEY (campaign_id, source, status, outcome)
) WITHOUT ROWID;

INSERT INTO report_reasons (campaign_id, source, status, outcome, n, example)
SELECT r.campaign_id, 'attempt', COALESCE(a.enhanced, CAST(a.code AS TEXT), ''), a.outcome,
    count(*), max(a.reply)
FROM attempts a JOIN recipients r ON r.id = a.recipient_id
WHERE a.outcome <> 'accepted'
GROUP BY 1, 2, 3, 4;

INSERT INTO report_reasons (campaign_id, source, status, outcome, n, example)
SELECT r.campaign_id, 'event', COALESCE(e.status, ''), e.kind, count(*),
    max(COALESCE(e.diagnostic, e.reason))
FROM events e JOIN recipients r ON r.id = e.recipient_id
WHERE e.kind NOT IN ('delivered', 'auto_reply')
GROUP BY 1, 2, 3, 4;

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
WHEN NEW.kind NOT IN ('delivered', 'auto_reply')
BEGIN
    INSERT INTO report_reasons (campaign_id, source, status, outcome, n, example)
    SELECT campaign_id, 'event', COALESCE(NEW.status, ''), NEW.kind, 1,
        COALESCE(NEW.diagnostic, NEW.reason)
    FROM recipients WHERE id = NEW.recipient_id
    ON CONFLICT DO UPDATE SET n = n + 1, example = COALESCE(excluded.example, example);
END;

-- Drill-down by reason and the recent-events list.
CREATE INDEX attempts_reason ON attempts (COALESCE(enhanced, CAST(code AS TEXT), ''));
CREATE INDEX events_status ON events (COALESCE(status, ''));
CREATE INDEX events_at ON events (at);
