-- Evidence is written in two steps so that no message-path transaction ever holds the chain's lock:
-- the pipeline stages its records here (a plain insert, no lock: bigserial never blocks), and a chainer
-- (hub/store/evidence.py chain_pending, run by the workers every few hundred milliseconds, by checkpoints
-- and by `hub evidence verify`) moves them into the hash chain in large batches under the head lock.
-- The staged rows keep the event time; the chain's `at` is the time of chaining (monotonic along the chain).
CREATE TABLE evidence_pending (
    id         bigserial   PRIMARY KEY,
    at         timestamptz NOT NULL,
    kind       text        NOT NULL,
    message_id uuid,
    actor      text        NOT NULL,
    detail     text        NOT NULL
);
