-- Trust (issue 3): the register of every certificate the hub CA issued, its revocations, and the CRLs it
-- published. The files in the PKI directory are what verification loads; these tables are the record they are
-- published from (hub pki revoke / crl / list). Serials are lower-case hex; fingerprints are SHA-256 of the DER.

CREATE TABLE trust_certificates (
    serial          text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]{1,40}$'),
    fingerprint     text NOT NULL UNIQUE CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    kind            text NOT NULL CHECK (kind IN ('root', 'issuing', 'hub', 'agency')),
    issuer_serial   text REFERENCES trust_certificates (serial),
    agency          text,
    system          text,
    subject         text NOT NULL,
    key_algorithm   text NOT NULL,
    not_before      timestamptz NOT NULL,
    not_after       timestamptz NOT NULL,
    der             bytea NOT NULL,
    renews          text REFERENCES trust_certificates (serial),
    issued_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'root') = (issuer_serial IS NULL)),
    CHECK ((kind IN ('hub', 'agency')) = (agency IS NOT NULL AND system IS NOT NULL))
);

CREATE INDEX trust_certificates_agency_system ON trust_certificates (agency, system);
CREATE INDEX trust_certificates_issuer ON trust_certificates (issuer_serial);

CREATE TABLE trust_revocations (
    serial      text PRIMARY KEY REFERENCES trust_certificates (serial),
    reason      text NOT NULL CHECK (reason IN ('unspecified', 'key-compromise', 'ca-compromise',
                    'affiliation-changed', 'superseded', 'cessation-of-operation', 'privilege-withdrawn')),
    revoked_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trust_crls (
    issuer_serial   text NOT NULL REFERENCES trust_certificates (serial),
    number          bigint NOT NULL CHECK (number > 0),
    this_update     timestamptz NOT NULL,
    next_update     timestamptz NOT NULL,
    revoked_count   integer NOT NULL,
    der             bytea NOT NULL,
    PRIMARY KEY (issuer_serial, number)
);
