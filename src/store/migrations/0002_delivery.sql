-- Delivery engine additions (owner: sender). Adds columns only; 0001 stays the shared contract.

-- The state a row had when a worker claimed it (`sending`), so that an aborted run can put every
-- untouched recipient back exactly where it was, and the run that holds the claim.
ALTER TABLE recipients ADD COLUMN claimed_from TEXT;
ALTER TABLE recipients ADD COLUMN claimed_run INTEGER REFERENCES runs(id);

-- How many recipients a run claimed and how many the relay accepted, for the run summary.
ALTER TABLE runs ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN accepted INTEGER NOT NULL DEFAULT 0;

CREATE INDEX attempts_run ON attempts (run_id);
CREATE INDEX attempts_outcome_at ON attempts (outcome, at);
