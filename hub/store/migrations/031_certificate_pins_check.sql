-- The check of migration 030 read the registered certificates joined by spaces, so one item holding two
-- fingerprints, or an empty item, passed it. Each item on its own now: one SHA-256 fingerprint, 64 lower-case hex
-- digits (the directory loader writes them so, hub/directory/load.py), no NULL, at most four.

ALTER TABLE directory_systems DROP CONSTRAINT IF EXISTS directory_systems_cert_sha256_check;
ALTER TABLE directory_systems
    ADD CONSTRAINT directory_systems_cert_sha256_check
        CHECK (cardinality(cert_sha256) <= 4 AND array_position(cert_sha256, NULL) IS NULL
               AND array_to_string(cert_sha256, '|') ~ '^([0-9a-f]{64}(\|[0-9a-f]{64})*)?$');
