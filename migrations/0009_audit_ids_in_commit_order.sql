-- 0009_audit_ids_in_commit_order: audit_log ids follow the order in which entries become visible.
--
-- An id drawn from the column's default was taken when the row was formed, long before its
-- transaction committed: two transactions writing entries for different devices could commit in
-- the opposite order of their ids. A reader of /api/v1/audit/export that keeps the last id it
-- saw (after_id) could then read id 11 while id 10 was still uncommitted, and never see 10.
--
-- Now every statement that appends to audit_log first takes one transaction-level lock, held
-- until its transaction ends, and each row's id is drawn by a row trigger, after that lock.
-- A transaction that appends therefore waits for any other appender to commit or roll back,
-- and its ids are above every id already visible: when a reader sees an entry, it sees every
-- entry with a lower id. Writers take this lock last: each transaction that appends does so in
-- its last statement (api/agent.c, api/profiles.c; api/import.c's audit part runs after the
-- rows it records are locked), so a writer holding it waits for nothing but its own commit, and
-- no deadlock can form around it. The lock is an advisory lock whose two-integer key is the
-- table's own oid (and 0), apart from the single-bigint key the migration runner uses.
--
-- The id column loses its default: an id given by an INSERT is replaced, as seq, prev_hash and
-- hash already are, so no writer can place an entry before or far after the others.

ALTER TABLE audit_log ALTER COLUMN id DROP DEFAULT;

CREATE FUNCTION audit_order() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock('audit_log'::regclass::oid::integer, 0);
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_log_order BEFORE INSERT ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_order();

-- Draws each row's id, after the statement's lock. A trigger of its own: the chain trigger (0008)
-- is unchanged.
CREATE FUNCTION audit_number() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    NEW.id := nextval('audit_log_id_seq'::regclass);
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_number BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_number();
