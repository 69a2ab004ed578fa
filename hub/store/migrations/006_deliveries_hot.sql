-- A delivery row is written pending and updated once or more (delivered, received, read, …). With `state` in an
-- index every one of those updates wrote new index entries, and — PostgreSQL without fresh statistics (a new
-- database, or autovacuum off) — the planner used that index for `state IN ('pending', 'failed')` and walked every
-- pending entry ever written (dead versions included): record_sent grew from 0.3 ms to 2 ms a call as the table grew
-- (bench/e2e.py). The recipient index now holds only columns that never change, so those updates are HOT (no index
-- writes) when the page has room, which the fill factor leaves.
DROP INDEX deliveries_recipient;
CREATE INDEX deliveries_recipient ON deliveries (recipient_system, recorded_at);
ALTER TABLE deliveries SET (fillfactor = 70);
