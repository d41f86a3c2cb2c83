-- Marks the file as a mailroom ledger (the bytes "MLRM" in the SQLite header's application id),
-- so read paths can refuse a database that is not one instead of misreading or changing it.
PRAGMA application_id = 1296847437;
