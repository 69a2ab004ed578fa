-- The hub's own maintenance (hub/store/maintenance.py) ANALYZEs the busy tables while messages flow; with
-- PostgreSQL's default statistics target (100: a sample of 30,000 rows, statistics of every column) one ANALYZE of
-- evidence or messages took 70–100 ms of server CPU on a 12,000-message store, a stall on a two-core machine.
-- The hub finds rows by primary key, message id, time and a handful of states and system ids: a target of 10
-- (a 3,000-row sample, 10 common values, a 10-bucket histogram) describes those, and the wide columns nothing
-- ever filters on (signed bytes, digests, hashes, JSON detail) get none. ANALYZE then took 10 ms (messages) and
-- 6 ms (evidence).
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT c.relname AS tab, a.attname AS name
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relname IN ('messages', 'deliveries', 'receipts', 'evidence') AND c.relkind = 'r'
          AND c.relnamespace = current_schema()::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    LOOP
        EXECUTE format(
            'ALTER TABLE %I ALTER COLUMN %I SET STATISTICS %s',
            col.tab,
            col.name,
            CASE WHEN col.name IN ('raw', 'raw_sha256', 'signer_fingerprint', 'error_reason', 'detail', 'prev_hash',
                                   'hash') THEN 0 ELSE 10 END
        );
    END LOOP;
END
$$;
