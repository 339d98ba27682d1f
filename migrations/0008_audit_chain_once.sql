-- The audit chain's trigger computed the device's genesis value twice and the first entry's hash
-- for every entry, even when the head row existed and the upsert took its UPDATE branch, where
-- both are thrown away. Now a device that has a chain takes one UPDATE (its row lock still makes
-- concurrent writers take turns), and only a device without one computes the genesis value, once.
-- Two first entries at once meet in the INSERT: the second waits for the first to commit, inserts
-- nothing, and goes round to the UPDATE, which then sees the committed head row.
-- The chain's definition (migration 0007, SECURITY.md) is unchanged.

CREATE OR REPLACE FUNCTION audit_chain() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    genesis bytea;
BEGIN
    NEW.at := date_trunc('microseconds', coalesce(NEW.at, now()));
    LOOP
        UPDATE audit_heads AS h
           SET seq = h.seq + 1, prev = h.hash,
               hash = sha256(h.hash || audit_payload(NEW.serial, h.seq + 1, NEW.at, NEW.actor,
                                                     NEW.action, NEW.detail))
         WHERE h.serial = NEW.serial
        RETURNING h.seq, h.prev, h.hash INTO NEW.seq, NEW.prev_hash, NEW.hash;
        IF FOUND THEN
            RETURN NEW;
        END IF;
        genesis := audit_genesis(NEW.serial);
        INSERT INTO audit_heads (serial, seq, prev, hash)
        VALUES (NEW.serial, 1, genesis,
                sha256(genesis || audit_payload(NEW.serial, 1, NEW.at, NEW.actor, NEW.action,
                                                NEW.detail)))
        ON CONFLICT (serial) DO NOTHING
        RETURNING seq, prev, hash INTO NEW.seq, NEW.prev_hash, NEW.hash;
        IF FOUND THEN
            RETURN NEW;
        END IF;
    END LOOP;
END
$$;
