-- 018_processes: the process engine (issue 14, hub/processes/engine.py). Off the message path: the engine reads what
-- the pipeline recorded (the evidence chain's `received`/`released` records, in chain order) and keeps its own
-- state here. Each process (documents, approvals, emergencies, meetings) adds its own tables in its own migration.

-- How far each process has read the evidence chain. An engine takes a process's row FOR UPDATE SKIP LOCKED, so each
-- chained record is handed to each process exactly once (its cursor moves in the transaction that applies it), and
-- an engine built with only some processes (a demo's pass, a second instance with fewer) never moves another's.
CREATE TABLE process_cursor (
    process text   PRIMARY KEY,
    seq     bigint NOT NULL DEFAULT 0
);

-- Deadlines. A timer fires once: the engine takes due rows FOR UPDATE SKIP LOCKED and marks them fired in the same
-- transaction as what firing does (a crash in between rolls both back, and the timer fires again later, once).
-- (process, kind, key) is unique: scheduling again re-arms the timer at its new time.
CREATE TABLE process_timers (
    id        bigserial   PRIMARY KEY,
    process   text        NOT NULL,
    kind      text        NOT NULL,
    key       text        NOT NULL,
    due_at    timestamptz NOT NULL,
    data      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    fired_at  timestamptz,
    UNIQUE (process, kind, key)
);
CREATE INDEX process_timers_due ON process_timers (due_at) WHERE fired_at IS NULL;

-- What the processes send (hub-signed envelopes, made inside the transaction that decided to send them). The
-- publisher puts each into the inbound exchange, where the pipeline examines, routes, records and delivers it like
-- any message; its id is fixed here, so a second publish after a crash is the pipeline's duplicate, never a second
-- delivery.
CREATE TABLE process_outbox (
    message_id   uuid        PRIMARY KEY,
    process      text        NOT NULL,
    service      text        NOT NULL,
    lane         text        NOT NULL CHECK (lane IN ('normal', 'emergency')),
    body         bytea       NOT NULL,
    created_at   timestamptz NOT NULL,
    published_at timestamptz
);
CREATE INDEX process_outbox_unpublished ON process_outbox (created_at) WHERE published_at IS NULL;

-- Alarms for the people on duty (the ops page): one open alarm per (process, code, ref); raising it again updates it.
CREATE TABLE process_alarms (
    id         bigserial   PRIMARY KEY,
    process    text        NOT NULL,
    code       text        NOT NULL,
    ref        text        NOT NULL,
    title      text        NOT NULL,
    detail     text        NOT NULL,
    raised_at  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    cleared_at timestamptz,
    cleared_by text
);
CREATE UNIQUE INDEX process_alarms_open ON process_alarms (process, code, ref) WHERE cleared_at IS NULL;
