-- 敦化市林业局行政审批窗口系统（county-222403-approval）数据库与交换枢纽适配器的约定表
-- The Dunhua approval desk's database: its own tables and the tables of its contract with the hub adapter.
--
-- Owned by the approval system: applications, application_materials (the adapter only READS them).
-- The contract with the adapter (README.md):
--   hub_outbox               the approval system INSERTS a row (with the application, in one transaction); the
--                            adapter only UPDATEs the columns state … status_reason of that row.
--   approval_status_history  the adapter INSERTS one row per approval.status message (never updates or deletes).
--   approval_decisions       the adapter INSERTS one row per approval.decision message (and its documents).
--   approval_decision_documents
--   hub_notices              the adapter INSERTS one row per hub.notice the hub addresses to the desk (审批进度反馈
--                            approval-feedback and the like), linked to the application by case number when it is
--                            one of the desk's own.
--   sdk_handled              the adapter's record of handled message ids (committed with the tables above).
-- Idempotent: running this file again changes nothing.

CREATE TABLE IF NOT EXISTS applications (
    case_number               TEXT PRIMARY KEY,            -- 审批案件编号 e.g. LCXK-222403-2026-000001
    item_code                 TEXT NOT NULL,               -- 许可事项编码
    item_name                 TEXT NOT NULL,               -- 许可事项名称
    accepting_agency_name     TEXT NOT NULL,               -- 受理机关
    accepting_agency_code     TEXT NOT NULL,               -- 受理机关统一社会信用代码
    applicant_kind            TEXT NOT NULL
        CHECK (applicant_kind IN ('legal-person', 'other-organisation', 'natural-person')),
    applicant_name            TEXT NOT NULL,
    applicant_credit_code     TEXT,                        -- 法人/非法人组织
    applicant_identity_number TEXT,                        -- 自然人
    applicant_address         TEXT,
    contact_name              TEXT NOT NULL,
    contact_phone             TEXT NOT NULL,
    summary                   TEXT,
    location_division_code    TEXT,
    location_description      TEXT,
    submitted_at              TIMESTAMPTZ NOT NULL,
    time_limit_working_days   INTEGER,
    statutory_deadline        DATE NOT NULL,
    promised_deadline         DATE,
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS application_materials (
    case_number TEXT NOT NULL REFERENCES applications (case_number) ON DELETE CASCADE,
    position    INTEGER NOT NULL,                          -- 1, 2, … (the order in the message)
    name        TEXT NOT NULL,
    form        TEXT NOT NULL CHECK (form IN ('electronic', 'original', 'copy')),
    copies      INTEGER,
    file_name   TEXT,                                      -- an electronic material's file …
    media_type  TEXT,
    content     BYTEA,
    PRIMARY KEY (case_number, position)
);

-- 外发表 The outbox: one row = one approval.application message, sent at least once under message_id.
CREATE TABLE IF NOT EXISTS hub_outbox (
    id               BIGSERIAL PRIMARY KEY,
    message_id       UUID NOT NULL UNIQUE DEFAULT gen_random_uuid(),  -- fixed at insert: a resend is a hub duplicate
    case_number      TEXT NOT NULL REFERENCES applications (case_number),
    recipient_system TEXT NOT NULL DEFAULT 'prov-220000-approval',
    urgency          TEXT NOT NULL DEFAULT '平件' CHECK (urgency IN ('特急', '加急', '平件')),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- written by the adapter only:
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at          TIMESTAMPTZ,
    hub_outcome      TEXT,            -- the hub's signed receipt: accepted / duplicate / quarantined
    hub_receipt_id   TEXT,
    status_code      TEXT,            -- failed: the stable code; pending: the last transient error's code
    status_reason    TEXT             -- 中文原因 — English reason
);
CREATE INDEX IF NOT EXISTS hub_outbox_pending ON hub_outbox (next_attempt_at, id) WHERE state = 'pending';

CREATE OR REPLACE FUNCTION hub_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hub_outbox', '');   -- one wake-up per statement; the adapter reads the table, not the payload
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS hub_outbox_notify ON hub_outbox;
CREATE TRIGGER hub_outbox_notify AFTER INSERT ON hub_outbox FOR EACH STATEMENT EXECUTE FUNCTION hub_outbox_notify();

-- 办理进度 Status history: one row per approval.status message received from the hub.
CREATE TABLE IF NOT EXISTS approval_status_history (
    id                   BIGSERIAL PRIMARY KEY,
    case_number          TEXT NOT NULL,
    status               TEXT NOT NULL,   -- accepted / not-accepted / supplement-required / under-review / suspended
    status_at            TIMESTAMPTZ NOT NULL,
    handling_agency_name TEXT NOT NULL,
    handling_agency_code TEXT NOT NULL,
    handler              TEXT,
    note                 TEXT,
    supplement_materials TEXT[],
    supplement_due       DATE,
    statutory_deadline   DATE,
    message_id           TEXT NOT NULL UNIQUE,  -- the hub message id (also in sdk_handled, same transaction)
    ref_to               TEXT,                  -- the application's message id when the sender names it
    sender_system        TEXT NOT NULL,
    received_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS approval_status_history_case ON approval_status_history (case_number, status_at);

-- 审批决定 Decisions: one row per approval.decision message received from the hub.
CREATE TABLE IF NOT EXISTS approval_decisions (
    id                   BIGSERIAL PRIMARY KEY,
    case_number          TEXT NOT NULL,
    decision_number      TEXT NOT NULL,
    outcome              TEXT NOT NULL CHECK (outcome IN ('approved', 'rejected')),
    deciding_agency_name TEXT NOT NULL,
    deciding_agency_code TEXT NOT NULL,
    decided_at           TIMESTAMPTZ NOT NULL,
    reasons              TEXT[],
    licence_number       TEXT,
    valid_from           DATE,
    valid_until          DATE,
    conditions           TEXT,
    remedy               TEXT,
    message_id           TEXT NOT NULL UNIQUE,
    ref_to               TEXT,
    sender_system        TEXT NOT NULL,
    received_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS approval_decisions_case ON approval_decisions (case_number);

CREATE TABLE IF NOT EXISTS approval_decision_documents (
    message_id TEXT NOT NULL REFERENCES approval_decisions (message_id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    file_name  TEXT NOT NULL,
    media_type TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    content    BYTEA NOT NULL,
    PRIMARY KEY (message_id, position)
);

-- 枢纽通知 The hub's notices (hub.notice, signed by the hub's process engine) addressed to the desk: one row each.
-- approval-feedback tells the applicant's channel how a case stands (registered with its statutory deadline, a
-- status the approval system did not send here, overdue and supervised); other kinds may follow (reminders …).
CREATE TABLE IF NOT EXISTS hub_notices (
    id           BIGSERIAL PRIMARY KEY,
    message_id   TEXT NOT NULL UNIQUE,        -- the hub message id (also in sdk_handled, same transaction)
    kind         TEXT NOT NULL,               -- approval-feedback / approval-at-risk / approval-overdue / …
    title        TEXT NOT NULL,               -- 通知标题（中文）
    text         TEXT NOT NULL,               -- 通知正文（中文，可附英文）
    refers_to    TEXT,                        -- the message the notice is about (e.g. the application's message id)
    case_ref     TEXT,                        -- 业务编号 as the hub wrote it (case number, document number, …)
    deadline     TIMESTAMPTZ,                 -- the deadline concerned (e.g. the statutory deadline's end)
    at           TIMESTAMPTZ NOT NULL,        -- when the hub made the notice
    outstanding  JSONB,                       -- [{agency_code, system, name, state}] of those yet to act, if any
    urgency      TEXT NOT NULL,
    case_number  TEXT,                        -- set when an approval-* notice names one of the desk's applications
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS hub_notices_case ON hub_notices (case_number, at) WHERE case_number IS NOT NULL;

-- The adapter SDK's record of handled message ids (the SDK creates it the same way if it is missing).
CREATE TABLE IF NOT EXISTS sdk_handled (
    message_id  TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    sender      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    handled_at  TIMESTAMPTZ NOT NULL
);

-- 案件进度视图 What the desk's staff read: each application, where its message is, its latest status and decision.
CREATE OR REPLACE VIEW application_progress AS
SELECT a.case_number,
       a.item_name,
       a.applicant_name,
       o.state AS outbox_state,
       o.status_code AS outbox_code,
       o.status_reason AS outbox_reason,
       (SELECT h.status FROM approval_status_history h WHERE h.case_number = a.case_number
         ORDER BY h.status_at DESC, h.id DESC LIMIT 1) AS latest_status,
       (SELECT d.outcome FROM approval_decisions d WHERE d.case_number = a.case_number
         ORDER BY d.decided_at DESC, d.id DESC LIMIT 1) AS decision,
       (SELECT n.title FROM hub_notices n WHERE n.case_number = a.case_number
         ORDER BY n.at DESC, n.id DESC LIMIT 1) AS latest_notice
FROM applications a
LEFT JOIN LATERAL (SELECT * FROM hub_outbox x WHERE x.case_number = a.case_number ORDER BY x.id DESC LIMIT 1) o
       ON true;
