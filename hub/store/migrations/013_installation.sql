-- One installation per store (issue 13): the identity of the hub installation this database belongs to — the
-- SHA-256 fingerprint of its root CA certificate and its RabbitMQ namespace — recorded by `hub pki init` (or by
-- the first hub, CLI or demo that finds the row missing in an older store). A hub with another state directory
-- (another root) or another namespace refuses to work on it (STORE_FOREIGN_INSTALLATION) instead of mixing
-- evidence signed by two CAs into one chain.
CREATE TABLE hub_installation (
    id                boolean PRIMARY KEY DEFAULT true CHECK (id),
    root_fingerprint  text NOT NULL CHECK (root_fingerprint ~ '^[0-9a-f]{64}$'),
    namespace         text NOT NULL,
    state_dir         text NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
