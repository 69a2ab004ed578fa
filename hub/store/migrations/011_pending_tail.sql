-- evidence_pending is a queue: every batch inserts into it, the chain job deletes what it moved. VACUUM (the hub's
-- own maintenance where autovacuum is off, or autovacuum) would find its tail pages empty and truncate them, which
-- takes an ACCESS EXCLUSIVE lock: the inserts of every worker wait behind it. The pages are reused anyway.
ALTER TABLE evidence_pending SET (vacuum_truncate = false);
