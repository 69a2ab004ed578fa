-- The server certificate each running HTTPS gateway presents to new connections (issue 11: it re-reads a renewed
-- one without a restart, hub/gateway/tls.py): serial and end, written with its row (hub/store/gateway_activity.py).
-- A renewal on disk that does not load leaves an older certificate in use than the file hub pki expiry reads; the
-- ops overview's gateway row warns 30 days before the one in use expires.

ALTER TABLE gateway_instances ADD COLUMN certificate_serial text;
ALTER TABLE gateway_instances ADD COLUMN certificate_not_after timestamptz;
