-- The shard of a campaign this ledger sends (`send --shard K/N`, written "K/N"); NULL when the
-- campaign is sent whole. A ledger keeps one shard per campaign for good: a send with another
-- shard, or none, would send some recipients twice across hosts.
ALTER TABLE campaigns ADD COLUMN shard TEXT;
