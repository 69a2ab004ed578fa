-- record_sent's receipts as one array of rows (as migration 008 did for record_batch): the receipt and the two
-- evidence texts made for it (its object inside a "delivered" record, and its own "receipt_sent" detail).
CREATE TYPE hub_receipt_row AS (
    receipt_id       uuid,
    message_id       uuid,
    kind             text,
    recipient_system text,
    code             text,
    at               timestamptz,
    evidence_object  text,
    evidence_detail  text
);
