-- 021: the emergencies process (hub/processes/emergencies.py, issue 14).
-- One row per broadcast the hub follows (an emergency.alert, each emergency.update, the closing), one row per
-- recipient agency that must acknowledge it (emergency.ack), with the hub's resends and escalations.

CREATE TABLE IF NOT EXISTS emergency_broadcasts (
    message_id      uuid PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('alert', 'update', 'closing')),
    alert_id        uuid NOT NULL,
    incident        text NOT NULL,
    level           text NOT NULL,
    title           text NOT NULL,
    division        text,
    sender_agency   text NOT NULL,
    sender_system   text NOT NULL,
    received_at     timestamptz NOT NULL,
    ack_within_s    integer NOT NULL,
    ack_due         timestamptz NOT NULL,
    limit_source    text NOT NULL,
    copy_id         uuid,
    rounds          integer NOT NULL DEFAULT 0,
    closed_at       timestamptz
);
CREATE INDEX IF NOT EXISTS emergency_broadcasts_alert ON emergency_broadcasts (alert_id);
CREATE INDEX IF NOT EXISTS emergency_broadcasts_incident ON emergency_broadcasts (incident);

CREATE TABLE IF NOT EXISTS emergency_recipients (
    message_id      uuid NOT NULL REFERENCES emergency_broadcasts (message_id) ON DELETE CASCADE,
    agency_code     text NOT NULL,
    agency_name     text NOT NULL,
    system          text NOT NULL,
    via             text NOT NULL CHECK (via IN ('sender', 'plan')),
    reason          text,
    acked_at        timestamptz,
    ack_id          uuid,
    response        text,
    resends         integer NOT NULL DEFAULT 0,
    last_resent_at  timestamptz,
    escalated_to    text,
    escalated_at    timestamptz,
    PRIMARY KEY (message_id, agency_code)
);
