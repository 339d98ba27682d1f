-- Technician actions on a device (retry, note, assign_slot), with the acting token's name.
-- after_seq is the device's highest message seq when the action was taken: a rebuild from the
-- stored events repeats each retry right after that message, so replaying a device gives the
-- same attempts as living through it did.
CREATE TABLE device_actions (
    id        bigserial PRIMARY KEY,
    serial    text NOT NULL REFERENCES devices (serial),
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL CHECK (action IN ('retry', 'note', 'assign_slot')),
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb,
    after_seq bigint NOT NULL DEFAULT 0 CHECK (after_seq >= 0)
);

CREATE INDEX device_actions_serial_idx ON device_actions (serial, id);
