-- The HTTPS gateway's activity, for the people on duty (issue 11): when each system last polled its inbox through a
-- gateway, and the requests a gateway refused itself (no, revoked or unknown certificate, a limit, a bad request, the
-- hub unavailable), counted by minute. Written by every gateway process (hub/store/gateway_activity.py: a task of
-- the gateway that writes what it saw every few seconds, never on a request's path), read by the ops overview —
-- whichever machines they run on (docs/operations.md puts two gateways behind the load balancer and the ops page on a
-- machine of its own, where no metrics file of a gateway is to be read). Nothing here is evidence: the evidence of
-- an exchange is the message, its deliveries and receipts.

CREATE TABLE gateway_polls (
    system       text        PRIMARY KEY,   -- the system its client certificate named (identified: in the directory)
    last_poll_at timestamptz NOT NULL       -- the latest start or end of one of its polls
);

CREATE TABLE gateway_refusals (
    minute  timestamptz NOT NULL,           -- date_trunc('minute', when)
    system  text        NOT NULL,           -- the system the client certificate named ('-': no certificate)
    code    text        NOT NULL,           -- the refusal's stable code (hub.errors.CODES)
    count   integer     NOT NULL CHECK (count > 0),
    PRIMARY KEY (minute, system, code)
);
