-- 0004_profiles: Autopilot deployment profiles as glovebox keeps them. A device takes the
-- profile whose group tag equals its own, ignoring ASCII letter case; the server derives that
-- link at start and on every change, so it is not stored a second time on the devices.
-- The server checks every field before writing (domain/profile.c); the constraints here are
-- the coarse outline that keeps the table sane whatever writes to it.
CREATE TABLE profiles (
    name                 text        PRIMARY KEY,
    tenant_domain        text        NOT NULL,
    join_type            text        NOT NULL,
    device_name_template text,
    group_tag            text        NOT NULL,
    assigned_user        text,
    esp_timeout_min      integer     NOT NULL DEFAULT 60,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT profiles_name_check
        CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$' AND name !~ '^[.]+$'),
    CONSTRAINT profiles_tenant_domain_check
        CHECK (tenant_domain ~ '^[A-Za-z0-9.-]{3,253}$'),
    CONSTRAINT profiles_join_type_check
        CHECK (join_type IN ('azure_ad', 'hybrid')),
    CONSTRAINT profiles_device_name_template_check
        CHECK (device_name_template IS NULL OR device_name_template ~ '^[A-Za-z0-9%:-]{1,64}$'),
    CONSTRAINT profiles_group_tag_check
        CHECK (char_length(group_tag) BETWEEN 1 AND 128 AND group_tag !~ '[[:cntrl:]]'),
    CONSTRAINT profiles_assigned_user_check
        CHECK (assigned_user IS NULL OR char_length(assigned_user) BETWEEN 3 AND 113),
    CONSTRAINT profiles_esp_timeout_min_check
        CHECK (esp_timeout_min BETWEEN 1 AND 1440),
    CONSTRAINT profiles_updated_check
        CHECK (updated_at >= created_at)
);

-- Two profiles may not claim one group tag. lower() under the C collation folds ASCII letters
-- only, exactly as the server compares tags, so the index and the server never disagree.
CREATE UNIQUE INDEX profiles_group_tag_key ON profiles (lower(group_tag COLLATE "C"));
