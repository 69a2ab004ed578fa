-- The ops page (issue 15): what its message search needs beyond 001's indexes, and the dead letters.
--
-- Search indexes. The page lists messages newest first (keyset on received_at, message_id) under one or more
-- filters; each filter below has an index that yields its rows already in that order, so a page stops after
-- `limit` rows instead of sorting the matches. Already there: the primary key (message id), messages_received_at
-- (no filter, time range), messages_sender (sender system), deliveries_recipient (recipient system: walked by
-- recorded_at, which is at most one batch after received_at; hub/store/ops.py merges on that bound).
-- Every index here is written by the message path (bench/e2e.py), so they are few, and partial where the common
-- value is found fast enough by walking messages_received_at:
--   service: about twenty services with a skewed mix; a rare one would otherwise walk most of the table.
CREATE INDEX messages_service ON messages (service, received_at);
--   state: 'accepted' is nearly every message (found at once by walking received_at); the other states are rare
--   and are what an operator looks for. ops.py adds the literal predicate so the planner can use it.
CREATE INDEX messages_state_rare ON messages (state, received_at) WHERE state <> 'accepted';
--   密级: 公开/内部 (0–1) are most messages; 2–4 are rare, as above.
CREATE INDEX messages_classified ON messages (classification, received_at) WHERE classification >= 2;

-- Dead letters: what reached the `ns.dead` queue (the hub's own after its last retry, a queue's dead-lettering,
-- a delivery an agency system refused with `park_refused`), drained by hub/pipeline/dead.py (insert and commit,
-- then ack). Written by hub/store/dead_letters.py only.
--
-- Nothing in a dead letter's headers or properties is signed: they are kept for display (claimed_message_id,
-- reason, code) and `origin` / `target_system` say only what RabbitMQ authenticated (the publishing user). A replay
-- re-verifies the body before the hub sends it anywhere on its own authority.
--
-- dedup_key (SHA-256 over the body, the headers and the properties as received) is unique among *pending* rows:
-- the same broker message redelivered after a crash between insert and ack is one row; the same bytes dying again
-- after a replay are a new one.
CREATE TABLE dead_letters (
    id                 bigserial   PRIMARY KEY,
    dedup_key          bytea       NOT NULL CHECK (length(dedup_key) = 32),
    first_seen         timestamptz NOT NULL,
    kind               text        NOT NULL CHECK (kind IN ('inbound', 'delivery', 'other')),
    source_queue       text,
    source_exchange    text,
    routing_key        text,
    reason             text,
    code               text,
    detail             text,
    refused_by         text,
    publisher          text,
    claimed_message_id text,
    message_id         uuid,
    headers            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    priority           smallint    NOT NULL DEFAULT 0,
    correlation_id     text,
    body               bytea       NOT NULL,
    body_size          integer     NOT NULL,
    body_sha256        bytea       NOT NULL CHECK (length(body_sha256) = 32),
    state              text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'replayed', 'discarded')),
    replayed_by        text,
    replayed_at        timestamptz,
    replay_reason      text,
    CHECK ((state = 'pending') = (replayed_at IS NULL))
);
CREATE UNIQUE INDEX dead_letters_pending_key ON dead_letters (dedup_key) WHERE state = 'pending';
CREATE INDEX dead_letters_pending ON dead_letters (id) WHERE state = 'pending';
CREATE INDEX dead_letters_message ON dead_letters (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX dead_letters_claimed ON dead_letters (claimed_message_id) WHERE claimed_message_id IS NOT NULL;

-- Intake rejections claiming an id (the trace shows them, marked as claims) and by code in a window (overview).
CREATE INDEX intake_rejections_claimed ON intake_rejections (claimed_message_id)
    WHERE claimed_message_id IS NOT NULL;
