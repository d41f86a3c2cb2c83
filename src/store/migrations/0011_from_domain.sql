-- The From domain of each run (owner: ops, issue 15), so that `[rate] daily_cap` and the
-- warm-up count the accepted messages of one sending domain rather than of the whole ledger.
-- Runs from before this migration have none: the daily count takes them as every domain's (the
-- cap they were sent under counted everything), and the warm-up's first day ignores them (a
-- domain is never taken as warmer than the ledger shows).
ALTER TABLE runs ADD COLUMN from_domain TEXT;
CREATE INDEX runs_from_domain ON runs (from_domain);
