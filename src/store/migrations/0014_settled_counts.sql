-- Claims stop moving the per-domain counters. A recipient being sent (`sending`) is counted
-- under the state it was claimed from (`claimed_from`; `pending` when that is unknown, as a
-- release reads it) until its outcome moves it, so a claim, or a claim given back, touches no
-- counter: every message used to fire the counter trigger twice (claim, outcome), now once.
-- The few rows in flight at any moment are counted from `recipients` when the counters are
-- read (`store::Reader::for_each_count`, through the index on (campaign, state)), so what a
-- report shows is unchanged.
DROP TRIGGER report_counts_insert;
DROP TRIGGER report_counts_update;
DROP TRIGGER report_counts_delete;

CREATE TRIGGER report_counts_insert AFTER INSERT ON recipients BEGIN
    INSERT INTO report_counts (campaign_id, domain, state, relay_accepted, n)
    VALUES (NEW.campaign_id, NEW.domain,
        CASE WHEN NEW.state = 'sending' THEN coalesce(NEW.claimed_from, 'pending')
            ELSE NEW.state END,
        NEW.relay_accepted, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER report_counts_update
AFTER UPDATE OF campaign_id, email, state, claimed_from, relay_accepted ON recipients
WHEN OLD.campaign_id IS NOT NEW.campaign_id OR OLD.domain IS NOT NEW.domain
    OR OLD.relay_accepted IS NOT NEW.relay_accepted
    OR (CASE WHEN OLD.state = 'sending' THEN coalesce(OLD.claimed_from, 'pending')
            ELSE OLD.state END)
        IS NOT (CASE WHEN NEW.state = 'sending' THEN coalesce(NEW.claimed_from, 'pending')
            ELSE NEW.state END)
BEGIN
    UPDATE report_counts SET n = n - 1
    WHERE campaign_id = OLD.campaign_id AND domain = OLD.domain
        AND state = (CASE WHEN OLD.state = 'sending' THEN coalesce(OLD.claimed_from, 'pending')
            ELSE OLD.state END)
        AND relay_accepted = OLD.relay_accepted;
    INSERT INTO report_counts (campaign_id, domain, state, relay_accepted, n)
    VALUES (NEW.campaign_id, NEW.domain,
        CASE WHEN NEW.state = 'sending' THEN coalesce(NEW.claimed_from, 'pending')
            ELSE NEW.state END,
        NEW.relay_accepted, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER report_counts_delete AFTER DELETE ON recipients BEGIN
    UPDATE report_counts SET n = n - 1
    WHERE campaign_id = OLD.campaign_id AND domain = OLD.domain
        AND state = (CASE WHEN OLD.state = 'sending' THEN coalesce(OLD.claimed_from, 'pending')
            ELSE OLD.state END)
        AND relay_accepted = OLD.relay_accepted;
END;

-- Recounted the new way (rows `sending` when this runs move under their earlier state).
DELETE FROM report_counts;
INSERT INTO report_counts (campaign_id, domain, state, relay_accepted, n)
SELECT campaign_id, domain,
    CASE WHEN state = 'sending' THEN coalesce(claimed_from, 'pending') ELSE state END,
    relay_accepted, count(*)
FROM recipients GROUP BY 1, 2, 3, 4;
