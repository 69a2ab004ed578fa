-- The processes of every `hub run` (issue 11's layout: hub instances, gateways and the ops page on machines of their
-- own, docs/operations.md): each pipeline worker and process engine writes its row while it runs (role, index, host,
-- pid, the directory version it works with), refreshes seen_at every few seconds and removes the row when it stops
-- (hub/store/process_instances.py). The ops overview reads them whatever machine it runs on: before, its process
-- engine and directory rows read only the metrics files of its own host, and on a machine of its own said the engine
-- 未启用 while it ran elsewhere — and would have said nothing had it stopped there.

CREATE TABLE process_instances (
    instance          uuid        PRIMARY KEY,
    role              text        NOT NULL,
    idx               text        NOT NULL,
    host              text        NOT NULL,
    pid               integer     NOT NULL,
    started_at        timestamptz NOT NULL,
    seen_at           timestamptz NOT NULL,
    directory_version integer
);
CREATE INDEX process_instances_seen ON process_instances (seen_at);
