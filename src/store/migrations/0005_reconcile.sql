-- Reconciling the ledger with the current contacts file (owner: sender). Adds a column only.

-- When a not-yet-final recipient (pending or deferred) was found missing from the contacts file
-- at the start of a send; NULL while it is in the file. Removed rows are never claimed; the row
-- keeps its state (it still counts as pending/deferred in reports) and is sendable again, with
-- removed_at cleared, if it comes back to the file.
ALTER TABLE recipients ADD COLUMN removed_at INTEGER;
