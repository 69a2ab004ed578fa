-- The check of migration 031 read the registered certificates joined by '|', so an empty item, or one item holding
-- two fingerprints joined by '|', still passed. Now the space-joined text must be exactly the items, each 64
-- lower-case hex digits (items hold no space: the directory loader splits on them, hub/directory/load.py).

ALTER TABLE directory_systems DROP CONSTRAINT IF EXISTS directory_systems_cert_sha256_check;
ALTER TABLE directory_systems
    ADD CONSTRAINT directory_systems_cert_sha256_check
        CHECK (cardinality(cert_sha256) <= 4 AND array_position(cert_sha256, NULL) IS NULL
               AND array_to_string(cert_sha256, ' ') ~ '^([0-9a-f]{64}( [0-9a-f]{64})*)?$'
               AND octet_length(array_to_string(cert_sha256, ' ')) = greatest(65 * cardinality(cert_sha256) - 1, 0));
