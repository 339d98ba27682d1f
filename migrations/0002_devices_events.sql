-- Devices, the agents' messages, and the stage runs derived from them.
-- PostgreSQL holds the truth: events are append-only; devices and stage_runs are what the
-- server derived from them (its in-memory table is rebuilt from here at start).

CREATE TABLE devices (
    serial        text PRIMARY KEY CHECK (length(serial) BETWEEN 1 AND 64),
    product_id    text,
    hardware_hash text,
    group_tag     text,
    assigned_user text,
    imported_at   timestamptz,
    slot          text CHECK (slot IS NULL OR length(slot) BETWEEN 1 AND 32),
    status        text NOT NULL DEFAULT 'registered'
                  CHECK (status IN ('registered', 'provisioning', 'green', 'red', 'resealed',
                                    'handover', 'delivered')),
    stage         text,
    attempt       integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    diagnosis     text,
    max_seq       bigint NOT NULL DEFAULT 0 CHECK (max_seq >= 0),
    last_seen     timestamptz,
    -- The derived state as a versioned JSON snapshot (protocol/'s snapshot format).
    state         jsonb,
    -- Set when messages arrived below max_seq: the state must be rebuilt from events.
    needs_rebuild boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX devices_status_idx ON devices (status, serial);
CREATE INDEX devices_group_tag_idx ON devices (group_tag) WHERE group_tag IS NOT NULL;
CREATE INDEX devices_needs_rebuild_idx ON devices (serial) WHERE needs_rebuild;

-- Every well-formed message an agent sent, once: (serial, seq) makes retries harmless.
CREATE TABLE events (
    serial      text NOT NULL REFERENCES devices (serial),
    seq         bigint NOT NULL CHECK (seq >= 1),
    type        text NOT NULL CHECK (type IN ('hello', 'stage', 'app', 'download', 'winevent',
                                              'result', 'heartbeat')),
    at          timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    body        jsonb NOT NULL,
    PRIMARY KEY (serial, seq)
);

CREATE INDEX events_received_idx ON events (received_at);

-- One row per stage run, per attempt, in the order the runs began (idx).
CREATE TABLE stage_runs (
    serial     text NOT NULL REFERENCES devices (serial) ON DELETE CASCADE,
    idx        integer NOT NULL CHECK (idx >= 0),
    attempt    integer NOT NULL CHECK (attempt >= 1),
    stage      text NOT NULL,
    state      text NOT NULL CHECK (state IN ('started', 'succeeded', 'failed', 'skipped')),
    started_at timestamptz,
    ended_at   timestamptz,
    hresult    text,
    PRIMARY KEY (serial, idx)
);

CREATE INDEX stage_runs_stage_idx ON stage_runs (stage, state);
