-- The HTTPS gateways that run (issue 11), for the ops overview's gateway row: each gateway process writes its row
-- when it starts, refreshes seen_at every few seconds and removes it when it stops (hub/store/gateway_activity.py);
-- a row not refreshed is a gateway that died. The ops page reads it whatever machine it and the gateways run on
-- (docs/operations.md: two gateways behind the load balancer, the ops page on a machine of its own).

CREATE TABLE gateway_instances (
    instance   uuid        PRIMARY KEY,
    host       text        NOT NULL,
    pid        integer     NOT NULL,
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL
);
