-- 0001_api_tokens: bearer tokens for agents and people. Only the SHA-256 of a token is
-- stored; the token itself is shown once, when it is created. A revoked token keeps its row
-- (revoked_at set) so the audit trail can still name it.
CREATE TABLE api_tokens (
    name         text        PRIMARY KEY,
    role         text        NOT NULL,
    token_sha256 bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CONSTRAINT api_tokens_name_check
        CHECK (char_length(name) BETWEEN 1 AND 64 AND name !~ '[[:cntrl:]]'),
    CONSTRAINT api_tokens_role_check
        CHECK (role IN ('agent', 'viewer', 'technician', 'admin')),
    CONSTRAINT api_tokens_sha256_check
        CHECK (octet_length(token_sha256) = 32),
    CONSTRAINT api_tokens_revoked_check
        CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);
