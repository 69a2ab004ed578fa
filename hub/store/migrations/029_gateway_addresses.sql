-- The networks a system may call the HTTPS gateway from (issue 11; the directory's gateway-addresses): a client
-- certificate presented from anywhere else is refused 403 GATEWAY_ADDRESS_REFUSED, so a copied certificate and key
-- are of no use outside the agency's network. Empty: from anywhere (the default). CIDR text as written, checked by
-- the directory loader (hub/directory/load.py).

ALTER TABLE directory_systems ADD COLUMN gateway_addresses text[] NOT NULL DEFAULT '{}';
