-- 020_approvals: the approvals process (issue 14, hub/processes/approvals.py). One row per approval case (案件),
-- keyed by its case number; the pauses that stop its statutory clock (中止, 补正); what happened to it; the supervision
-- (督办) the hub sent. Written only by the process engine, inside the transaction that hands it a message or fires a
-- timer, so a crash repeats a step whole or not at all.

CREATE TABLE approval_cases (
    case_number       text        PRIMARY KEY,
    application_id    uuid        NOT NULL,
    item_code         text        NOT NULL,
    item_name         text        NOT NULL,
    accepting_agency  text        NOT NULL,      -- 受理机关 (the application's AcceptingAgency)
    accepting_name    text        NOT NULL,
    applicant_name    text        NOT NULL,      -- 申请人 (a name only: no identity or credit number is kept here)
    portal_agency     text        NOT NULL,      -- the application's signed sender: the applicant's portal or desk,
    portal_system     text        NOT NULL,      -- which gets the status feedback
    approval_system   text        NOT NULL,      -- the system the application was delivered to: only it reports
    submitted_at      timestamptz NOT NULL,
    start_date        date        NOT NULL,      -- the day the clock starts from (not counted: 期间开始之日不计算在内)
    limit_days        integer     NOT NULL CHECK (limit_days BETWEEN 0 AND 3650),
    declared_deadline date        NOT NULL,      -- the application's StatutoryDeadline
    promised_deadline date,
    reported_deadline date,                      -- the approval system's latest StatutoryDeadline in a status
    deadline          date,                      -- the hub's: start + limit working days + paused working days;
                                                 -- NULL while the clock is stopped
    state             text        NOT NULL CHECK (state IN ('submitted', 'accepted', 'supplement', 'under_review',
                                                            'suspended', 'not_accepted', 'approved', 'rejected')),
    handler           text,
    overdue_at        timestamptz,               -- when the hub found it past its deadline (first time)
    decided_on        date,
    decision_number   text,
    working_days      integer,                   -- working days it took (pauses not counted), once decided
    late              boolean,                   -- decided after its deadline
    received_at       timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX approval_cases_item ON approval_cases (item_code, submitted_at);

-- The clock is stopped on the working days after `since` up to and including `until` (NULL: still stopped).
CREATE TABLE approval_pauses (
    case_number text NOT NULL REFERENCES approval_cases ON DELETE CASCADE,
    since       date NOT NULL,
    until       date,
    reason      text NOT NULL CHECK (reason IN ('suspended', 'supplement')),
    PRIMARY KEY (case_number, since, reason)
);
CREATE UNIQUE INDEX approval_pauses_open ON approval_pauses (case_number) WHERE until IS NULL;

-- What happened, in order (the status command prints it).
CREATE TABLE approval_events (
    id          bigserial   PRIMARY KEY,
    case_number text        NOT NULL REFERENCES approval_cases ON DELETE CASCADE,
    message_id  uuid,
    kind        text        NOT NULL,
    state       text,
    at          timestamptz NOT NULL,
    note        text
);
CREATE INDEX approval_events_case ON approval_events (case_number, id);

-- The supervision the hub sent: one per (case, level, deadline) — a timer fired again, or re-armed with the same
-- deadline, finds its row and sends nothing more.
CREATE TABLE approval_supervisions (
    case_number text        NOT NULL REFERENCES approval_cases ON DELETE CASCADE,
    level       text        NOT NULL CHECK (level IN ('reminder', 'supervise', 'escalate')),
    deadline    date        NOT NULL,
    message_id  uuid        NOT NULL,
    sent_at     timestamptz NOT NULL,
    recipients  text[]      NOT NULL,
    PRIMARY KEY (case_number, level, deadline)
);
