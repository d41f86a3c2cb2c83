-- A smaller ledger per recipient (issue 16: at a million recipients every byte of a row or an
-- index entry is a megabyte).
--
-- `recipients.message_id` and its index go: a message's Message-ID is `<token>.<campaign
-- hash>@<From domain>`, so it is derived from the row's token when the message is rendered, and
-- a bounce that quotes it is matched through the token's own unique index. Every Message-ID
-- mailroom has written begins with the token (the format has not changed since the first
-- ledger), so no stored value is lost.
DROP INDEX recipients_message_id;
ALTER TABLE recipients DROP COLUMN message_id;

-- A run's `claimed` and `accepted` are counted once, when it finishes, over its own attempts: they
-- are the attempts after the last one that existed when it started (one run at a time holds the
-- send lock), so `runs.first_attempt` bounds that count to a range of the attempts' rowid and the
-- index on every attempt's run goes. NULL for runs from before this migration (all attempts).
DROP INDEX attempts_run;
ALTER TABLE runs ADD COLUMN first_attempt INTEGER;

-- The daily cap and warm-up count accepted attempts since a time; the index on every attempt's
-- (outcome, at) becomes one on the accepted ones' time only.
DROP INDEX attempts_outcome_at;
CREATE INDEX attempts_accepted_at ON attempts (at) WHERE outcome = 'accepted';
