-- The requests each system made through the HTTPS gateways, by minute (issue 11), for the people on duty: when a
-- bureau calls to say it cannot send, the ops overview shows whether anything of it arrived at all (beside what the
-- gateways refused: gateway_refusals), whatever machine each gateway runs on. Counted in memory by every gateway for
-- the identified caller of each request, written every few seconds by its activity task (hub/store/
-- gateway_activity.py), kept 30 days like the refusals.

CREATE TABLE gateway_requests (
    minute  timestamptz NOT NULL,           -- date_trunc('minute', when)
    system  text        NOT NULL,           -- the system its client certificate named (identified: in the directory)
    count   integer     NOT NULL CHECK (count > 0),
    PRIMARY KEY (minute, system)
);
