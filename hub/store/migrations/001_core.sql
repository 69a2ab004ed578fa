-- 001_core: messages as received, deliveries per recipient, receipts, quarantine, refused intake and the
-- hash-chained evidence log. Written by hub/store/messages.py and hub/store/evidence.py only.

-- One row per signed message id (the hub's deduplication key). raw holds the signed bytes exactly as received.
CREATE TABLE messages (
    message_id           uuid PRIMARY KEY,
    conversation_id      uuid,
    ref_to               uuid,
    sender_agency        text        NOT NULL,
    sender_system        text        NOT NULL,
    service              text        NOT NULL,
    version              integer     NOT NULL,
    classification       smallint    NOT NULL CHECK (classification BETWEEN 0 AND 4),
    classification_label text        NOT NULL,
    urgency              text        NOT NULL,
    created              timestamptz NOT NULL,
    expires              timestamptz NOT NULL,
    received_at          timestamptz NOT NULL,
    raw                  bytea       NOT NULL,
    raw_sha256           bytea       NOT NULL CHECK (length(raw_sha256) = 32),
    signer_serial        text,
    signer_fingerprint   text,
    state                text        NOT NULL
        CHECK (state IN ('accepted', 'rejected', 'quarantined', 'released', 'quarantine_rejected')),
    error_code           text,
    error_reason         text,
    business_ref         text
);
CREATE INDEX messages_conversation ON messages (conversation_id);
CREATE INDEX messages_received_at ON messages (received_at);
CREATE INDEX messages_sender ON messages (sender_system, received_at);

-- One row per (message, recipient system); the time each tracking state was first reached.
CREATE TABLE deliveries (
    message_id       uuid        NOT NULL REFERENCES messages (message_id),
    recipient_system text        NOT NULL,
    recipient_agency text        NOT NULL,
    role             text        NOT NULL CHECK (role IN ('to', 'cc')),
    state            text        NOT NULL
        CHECK (state IN ('pending', 'delivered', 'blocked', 'received', 'read', 'handled', 'feedback', 'failed')),
    error_code       text,
    recorded_at      timestamptz NOT NULL,
    delivered_at     timestamptz,
    blocked_at       timestamptz,
    received_at      timestamptz,
    read_at          timestamptz,
    handled_at       timestamptz,
    feedback_at      timestamptz,
    failed_at        timestamptz,
    PRIMARY KEY (message_id, recipient_system)
);
CREATE INDEX deliveries_recipient ON deliveries (recipient_system, state);

-- What the hub sent back. No foreign key: a refused message may have no trustworthy id and no messages row.
CREATE TABLE receipts (
    receipt_id       uuid        PRIMARY KEY,
    message_id       uuid,
    kind             text        NOT NULL CHECK (kind IN ('hub.receipt', 'hub.error')),
    recipient_system text,
    code             text,
    at               timestamptz NOT NULL
);
CREATE INDEX receipts_message ON receipts (message_id);

-- Messages held for a person to release or reject (classification markings in a public/internal message).
CREATE TABLE quarantine (
    message_id uuid        PRIMARY KEY REFERENCES messages (message_id),
    markings   text[]      NOT NULL,
    status     text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'released', 'rejected')),
    reviewer   text,
    reason     text,
    created_at timestamptz NOT NULL,
    decided_at timestamptz,
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE INDEX quarantine_pending ON quarantine (created_at) WHERE status = 'pending';

-- Messages refused before their signature could be trusted: their claims never occupy a message id.
-- raw is capped (the first 64 KiB); raw_sha256 and raw_size describe the whole.
CREATE TABLE intake_rejections (
    id                 bigserial   PRIMARY KEY,
    received_at        timestamptz NOT NULL,
    claimed_message_id text,
    claimed_sender     text,
    service            text,
    amqp_user          text,
    raw                bytea       NOT NULL,
    raw_size           integer     NOT NULL,
    raw_sha256         bytea       NOT NULL CHECK (length(raw_sha256) = 32),
    error_code         text        NOT NULL,
    error_reason       text        NOT NULL
);
CREATE INDEX intake_rejections_received_at ON intake_rejections (received_at);

-- The evidence log: gapless seq, each record hashed over a canonical encoding of its fields and its
-- predecessor's hash (hub/store/evidence.py). detail is the canonical JSON text exactly as hashed.
CREATE TABLE evidence (
    seq        bigint      PRIMARY KEY CHECK (seq > 0),
    at         timestamptz NOT NULL,
    kind       text        NOT NULL,
    message_id uuid,
    actor      text        NOT NULL,
    detail     text        NOT NULL,
    prev_hash  bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash       bytea       NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX evidence_message ON evidence (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX evidence_kind ON evidence (kind, seq);

-- The chain head: one row, locked (SELECT … FOR UPDATE) by every append, which makes seq gapless and the
-- chain linear even with several hub processes appending at once.
CREATE TABLE evidence_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint  NOT NULL,
    hash bytea   NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO evidence_head (id, seq, hash) VALUES (true, 0, decode(repeat('00', 32), 'hex'));

-- Append-only in normal operation. Tamper-evidence does not rely on this (the chain and the signed checkpoints
-- do); it stops accidents. A superuser can still disable it, which is what `hub evidence verify` is for.
CREATE FUNCTION evidence_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the evidence log is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER evidence_append_only BEFORE UPDATE OR DELETE ON evidence
    FOR EACH ROW EXECUTE FUNCTION evidence_append_only();
CREATE TRIGGER evidence_no_truncate BEFORE TRUNCATE ON evidence
    FOR EACH STATEMENT EXECUTE FUNCTION evidence_append_only();
