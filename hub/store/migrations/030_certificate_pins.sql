-- The directory's cert-sha256 (issue 11, review): the certificates registered for a system, now enforced. A list of
-- one to four SHA-256 fingerprints (a certificate and its renewal side by side while both are in use; a separate
-- TLS client certificate beside the signing one), checked by the directory loader (each fingerprint registered for
-- one system only, hub/directory/load.py). Empty: any valid certificate the hub CA issued to the system. A message
-- signed, or a gateway request made, with any other certificate of the system is refused CERT_NOT_REGISTERED.

ALTER TABLE directory_systems DROP CONSTRAINT IF EXISTS directory_systems_cert_sha256_key;
ALTER TABLE directory_systems DROP CONSTRAINT IF EXISTS directory_systems_cert_sha256_check;
ALTER TABLE directory_systems
    ALTER COLUMN cert_sha256 TYPE text[]
        USING CASE WHEN cert_sha256 IS NULL THEN '{}'::text[] ELSE ARRAY[cert_sha256] END,
    ALTER COLUMN cert_sha256 SET DEFAULT '{}',
    ALTER COLUMN cert_sha256 SET NOT NULL,
    ADD CONSTRAINT directory_systems_cert_sha256_check
        CHECK (cardinality(cert_sha256) <= 4 AND array_to_string(cert_sha256, ' ') ~ '^([0-9a-f]{64}( |$))*$');
