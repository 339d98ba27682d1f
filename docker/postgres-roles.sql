-- Database roles for a glovebox deployment (SECURITY.md explains why). Run as a superuser in the
-- glovebox database; replace the role names if yours differ.
--
-- glovebox_owner owns the schema: only `gloveboxd migrate` runs as it. Keep its credentials
-- away from the server's host.
-- glovebox_app is what `gloveboxd serve` connects as: it reads and writes data, may append to
-- audit_log but not change or remove an entry, and owns nothing, so it can neither drop nor
-- disable the audit triggers (and, not being a superuser, cannot set session_replication_role
-- to skip them).

-- ---- once ----
CREATE ROLE glovebox_owner LOGIN;
CREATE ROLE glovebox_app LOGIN;
GRANT CREATE, USAGE ON SCHEMA public TO glovebox_owner;
GRANT USAGE ON SCHEMA public TO glovebox_app;

-- ---- after every `gloveboxd migrate` (idempotent) ----
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO glovebox_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO glovebox_app;
REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM glovebox_app;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM glovebox_app;
REVOKE ALL ON audit_heads FROM glovebox_app;
