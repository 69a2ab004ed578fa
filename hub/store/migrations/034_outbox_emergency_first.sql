-- The process engine publishes its outbox emergency lane first (hub/processes/engine.py _UNPUBLISHED): a pass takes
-- at most 200 rows, and oldest first a late round's emergency resend waited behind every reminder queued before it
-- (1,000 document reminders: five passes, 2.5 s; 20,000: about 50 s). The index gives that order directly, still
-- over the unpublished rows only.
DROP INDEX process_outbox_unpublished;
CREATE INDEX process_outbox_unpublished ON process_outbox ((lane <> 'emergency'), created_at) WHERE published_at IS NULL;
