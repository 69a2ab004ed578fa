-- The signed bytes as received are the largest thing the hub writes (4–5 KB a message with its certificate
-- chain), so they are TOASTed; pglz compression of them cost ~100 µs a row on the e2e bench's PostgreSQL,
-- lz4 ~50 µs. lz4 applies to rows written from now on. Where the server was built without lz4 this is a no-op.
DO $$
BEGIN
    ALTER TABLE messages ALTER COLUMN raw SET COMPRESSION lz4;
    ALTER TABLE intake_rejections ALTER COLUMN raw SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL build; the raw columns keep pglz';
END
$$;
