-- The ops page and the operators' commands (issue 15): every action an operator takes (release, reject, replay,
-- revoke, approve, account changes…) is one row here with its reason in full, and one `operator_action` record in
-- the evidence chain that carries the row's id and the reason's SHA-256 (the chain holds no free text). Written by
-- hub/store/audit.py only; read by the auditor's page.
CREATE TABLE operator_actions (
    id        bigserial   PRIMARY KEY,
    at        timestamptz NOT NULL,
    operator  text        NOT NULL CHECK (operator <> ''),
    role      text        NOT NULL,
    action    text        NOT NULL,
    via       text        NOT NULL CHECK (via IN ('web', 'cli')),
    target    text,
    message_id uuid,
    reason    text        NOT NULL CHECK (btrim(reason) <> ''),
    outcome   text        NOT NULL DEFAULT 'done' CHECK (outcome IN ('done', 'refused', 'failed')),
    detail    jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX operator_actions_at ON operator_actions (at DESC);
CREATE INDEX operator_actions_operator ON operator_actions (operator, at DESC);
