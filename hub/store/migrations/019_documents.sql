-- 019_documents: the documents process (issue 14, hub/processes/documents.py). Who has signed for, read and handled
-- each official document is in `deliveries` (the pipeline writes the delivery, the process applies the recipients'
-- document.receipt messages to it). Here only what a feedback deadline adds: one row per document that has one
-- (FeedbackDue in its body, or a default for its urgency in routes/documents-deadlines.toml), and the reminders
-- and overdue reports the hub sent for it. A document without a deadline has no row.
CREATE TABLE document_deadlines (
    message_id      uuid        PRIMARY KEY REFERENCES messages (message_id),
    sender_agency   text        NOT NULL,
    sender_system   text        NOT NULL,
    title           text        NOT NULL,
    document_number text,
    feedback_due    timestamptz NOT NULL,
    due_source      text        NOT NULL CHECK (due_source IN ('document', 'urgency')),
    remind_at       timestamptz NOT NULL,
    tracked_at      timestamptz NOT NULL,
    reminded_at     timestamptz,
    overdue_at      timestamptz,
    completed_at    timestamptz
);
-- `hub documents overdue` and the ops page: the open ones by deadline.
CREATE INDEX document_deadlines_open ON document_deadlines (feedback_due) WHERE completed_at IS NULL;

-- What the hub sent about a document: a reminder to one recipient (kind 'reminder') or the overdue report to the
-- sender (kind 'overdue', recipient_system = the sender's). The primary key is the "never twice" of the process:
-- a timer fired again after a crash finds its row (and the notice's deterministic id is the pipeline's duplicate).
CREATE TABLE document_notices (
    message_id       uuid        NOT NULL REFERENCES document_deadlines (message_id),
    kind             text        NOT NULL CHECK (kind IN ('reminder', 'overdue')),
    recipient_system text        NOT NULL,
    notice_id        uuid        NOT NULL,
    state_then       text        NOT NULL,
    sent_at          timestamptz NOT NULL,
    PRIMARY KEY (message_id, kind, recipient_system)
);
