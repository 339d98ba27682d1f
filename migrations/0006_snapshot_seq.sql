-- Ingest writes a device's snapshot (devices.state) only now and then, not with every message:
-- snap_seq is the seq the stored snapshot reaches, and at start the messages above it are
-- replayed onto it. Every snapshot written so far was current.
ALTER TABLE devices ADD COLUMN snap_seq bigint NOT NULL DEFAULT 0 CHECK (snap_seq >= 0);
UPDATE devices SET snap_seq = max_seq WHERE state IS NOT NULL;
