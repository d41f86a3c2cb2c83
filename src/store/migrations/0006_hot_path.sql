-- Cheaper state changes on the send hot path (owner: sender). Every claim and every outcome
-- changes `state`; an index that contains `state` is rewritten each time, on a page chosen by
-- the recipient's domain, so a batch of N messages to N domains dirtied N pages twice. The
-- domain index serves lookups by domain (report drill-down), which need no state: per-domain
-- counts come from report_counts.
DROP INDEX recipients_domain;
CREATE INDEX recipients_domain ON recipients (campaign_id, domain);

-- Every message appends an attempt, so every index on attempts is written once per message.
-- Nothing reads attempts by `at` alone (the daily cap uses attempts_outcome_at), and the reason
-- drill-down only ever asks for attempts that were not accepted: index just those.
DROP INDEX attempts_at;
DROP INDEX attempts_reason;
CREATE INDEX attempts_reason ON attempts (COALESCE(enhanced, CAST(code AS TEXT), ''))
    WHERE outcome <> 'accepted';
