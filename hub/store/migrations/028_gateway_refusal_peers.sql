-- The addresses the gateways' refusals came from (issue 11), for the people on duty: a failed TLS handshake names no
-- system (nothing of a certificate that did not verify is trusted), so the client's address is the one clue to which
-- bureau's system it is; for a refused system it says which of its machines still uses the revoked certificate.
-- At most MAX_PEERS (hub/store/gateway_activity.py) distinct addresses a row, without ports. Behind a load balancer
-- in TCP mode every address is the balancer's (docs/operations.md).

ALTER TABLE gateway_refusals ADD COLUMN peers text[] NOT NULL DEFAULT '{}';
