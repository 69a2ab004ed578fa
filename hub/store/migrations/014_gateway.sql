-- The HTTPS gateway (issue 11). The certificate register learns two kinds: 'tls' (a TLS-only client certificate of
-- an agency system, `hub pki issue --tls`: clientAuth, it cannot sign messages) and 'server' (the gateway's own TLS
-- server certificate, `hub pki issue-server`, no agency or system). A system of the directory may carry the
-- gateway's limits: `rate` (requests per second) and `concurrency` (requests in progress at once); NULL = the
-- gateway's defaults.

ALTER TABLE trust_certificates DROP CONSTRAINT trust_certificates_kind_check;
ALTER TABLE trust_certificates ADD CONSTRAINT trust_certificates_kind_check
    CHECK (kind IN ('root', 'issuing', 'hub', 'agency', 'tls', 'server'));
ALTER TABLE trust_certificates DROP CONSTRAINT trust_certificates_check1;
ALTER TABLE trust_certificates ADD CONSTRAINT trust_certificates_check1
    CHECK ((kind IN ('hub', 'agency', 'tls')) = (agency IS NOT NULL AND system IS NOT NULL));

ALTER TABLE directory_systems ADD COLUMN rate integer CHECK (rate BETWEEN 1 AND 100000);
ALTER TABLE directory_systems ADD COLUMN concurrency integer CHECK (concurrency BETWEEN 1 AND 1000);
