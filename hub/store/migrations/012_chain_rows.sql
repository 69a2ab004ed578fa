-- The chain job's insert into evidence as one array of rows (as migrations 008 and 010 did for the message path):
-- eight column arrays cost asyncpg two Python-level isinstance checks against abstract base classes per element,
-- sixteen a record; an array of rows costs two a record.
CREATE TYPE hub_chain_row AS (
    seq       bigint,
    at        timestamptz,
    kind      text,
    message_id uuid,
    actor     text,
    detail    text,
    prev_hash bytea,
    hash      bytea
);
