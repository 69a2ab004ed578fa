-- A signed message compresses (lz4) to about 3 KB: above the 2 KB TOAST target, so the raw bytes were moved out of
-- line into the TOAST table (two chunks: two more heap tuples and index entries per message). STORAGE MAIN keeps
-- the compressed bytes in the row (a row of ~3.5 KB fits a page twice); PostgreSQL moves a MAIN value out of line
-- only when the row would not fit a page otherwise. Every other variable-length column is MAIN too: with raw kept
-- in the row, the toaster would otherwise push the small EXTENDED values (the 32-byte digest, the fingerprint) out
-- of line one by one to reach its 2 KB target, each a TOAST row of its own. Applies to rows written from now on;
-- nothing is rewritten.
ALTER TABLE messages
    ALTER COLUMN raw SET STORAGE MAIN,
    ALTER COLUMN raw_sha256 SET STORAGE MAIN,
    ALTER COLUMN sender_agency SET STORAGE MAIN,
    ALTER COLUMN sender_system SET STORAGE MAIN,
    ALTER COLUMN service SET STORAGE MAIN,
    ALTER COLUMN classification_label SET STORAGE MAIN,
    ALTER COLUMN urgency SET STORAGE MAIN,
    ALTER COLUMN signer_serial SET STORAGE MAIN,
    ALTER COLUMN signer_fingerprint SET STORAGE MAIN,
    ALTER COLUMN state SET STORAGE MAIN,
    ALTER COLUMN error_code SET STORAGE MAIN,
    ALTER COLUMN error_reason SET STORAGE MAIN,
    ALTER COLUMN business_ref SET STORAGE MAIN;
