-- Cheaper state changes on the send hot path (owner: sender). Every claim and every outcome
-- changes `state`; an index that contains `state` is rewritten each time, on a page chosen by
-- the recipient's domain, so a batch of N messages to N domains dirtied N pages twice. The
-- domain index serves lookups by domain (report drill-down), which need no state: per-domain
-- counts come from report_counts.
DROP INDEX recipients_domain;
CREATE INDEX recipients_domain ON recipients (campaign_id, domain);
