-- 0007_audit_log: the handover audit trail. One append-only log of who did what to which
-- device, with a SHA-256 hash chain per device: an entry's hash covers the previous entry's
-- hash and a canonical encoding of the entry, so changing or removing an entry breaks every
-- hash after it. The server recomputes the chain when it is read (api/audit.c); the encoding
-- below and the one in C must stay byte for byte the same (agent-protocol/README.md does not
-- cover it; SECURITY.md does).
--
-- Canonical encoding of an entry (audit_payload):
--   "glovebox-audit-v1\n" then, for serial, seq, at, actor, action and detail in that order,
--   the field's length in bytes (decimal), ":", the field's UTF-8 bytes and "\n".
--   seq is decimal; at is the whole number of microseconds since 1970-01-01 UTC (decimal);
--   detail is PostgreSQL's text form of the jsonb value (its canonical form).
-- hash = SHA-256(prev_hash || payload); the first entry's prev_hash is the device's genesis
-- value SHA-256("glovebox-audit-genesis\n" || length(serial) || ":" || serial || "\n").
--
-- The server's database role gets INSERT and SELECT on audit_log and nothing on audit_heads
-- (SECURITY.md): the chain is advanced by audit_chain(), which runs as the owner of these
-- tables, and only the owner (or a superuser) can disable the triggers.

CREATE TABLE audit_heads (
    serial text   PRIMARY KEY,
    seq    bigint NOT NULL CHECK (seq >= 1),
    prev   bytea  NOT NULL,
    hash   bytea  NOT NULL
);

CREATE TABLE audit_log (
    id        bigserial   PRIMARY KEY,
    serial    text        NOT NULL,
    seq       bigint      NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text        NOT NULL,
    action    text        NOT NULL,
    detail    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    prev_hash bytea       NOT NULL,
    hash      bytea       NOT NULL,
    CONSTRAINT audit_log_serial_seq_key UNIQUE (serial, seq),
    CONSTRAINT audit_log_action_check
        CHECK (action ~ '^[a-z_]{1,32}$'),
    CONSTRAINT audit_log_hash_check
        CHECK (octet_length(hash) = 32 AND octet_length(prev_hash) = 32)
);

CREATE INDEX audit_log_at_idx ON audit_log (at, id);

-- Lengths are octet_length() in the database's encoding, which must therefore be UTF-8 (as
-- scripts/lib/pg-cluster creates it); the check below refuses any other. The functions are
-- plain expressions, not STRICT, so that PostgreSQL inlines them: a 100,000-row import writes
-- 100,000 entries.
DO $$
BEGIN
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'the glovebox database must use the UTF8 encoding, not %',
            current_setting('server_encoding');
    END IF;
END
$$;

CREATE FUNCTION audit_field(v text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN octet_length(v)::text || ':' || v || E'\n';

CREATE FUNCTION audit_genesis(serial text) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN sha256(convert_to('glovebox-audit-genesis' || E'\n' || audit_field(serial), 'UTF8'));

-- STABLE, not IMMUTABLE: extract() from a timestamptz is (the epoch does not depend on the time
-- zone, but PostgreSQL marks the function so), and an inlined body may not be more volatile
-- than its function.
CREATE FUNCTION audit_payload(serial text, seq bigint, at timestamptz, actor text, action text,
                              detail jsonb) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN convert_to('glovebox-audit-v1' || E'\n' || audit_field(serial) ||
                      audit_field(seq::text) ||
                      audit_field(trunc(extract(epoch FROM at) * 1000000)::bigint::text) ||
                      audit_field(actor) || audit_field(action) || audit_field(detail::text),
                      'UTF8');

-- Numbers an entry and links it: one upsert of the device's head row, whose row lock makes
-- concurrent writers for one device take turns (the second waits for the first to commit, then
-- reads its head), so a chain never forks.
CREATE FUNCTION audit_chain() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    NEW.at := date_trunc('microseconds', coalesce(NEW.at, now()));
    INSERT INTO audit_heads AS h (serial, seq, prev, hash)
    VALUES (NEW.serial, 1, audit_genesis(NEW.serial),
            sha256(audit_genesis(NEW.serial) ||
                   audit_payload(NEW.serial, 1, NEW.at, NEW.actor, NEW.action, NEW.detail)))
    ON CONFLICT (serial) DO UPDATE
        SET seq = h.seq + 1, prev = h.hash,
            hash = sha256(h.hash || audit_payload(NEW.serial, h.seq + 1, NEW.at, NEW.actor,
                                                  NEW.action, NEW.detail))
    RETURNING seq, prev, hash INTO NEW.seq, NEW.prev_hash, NEW.hash;
    RETURN NEW;
END
$$;

CREATE FUNCTION audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_chain();
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
