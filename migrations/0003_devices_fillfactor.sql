-- Every ingest transaction rewrites its devices' rows (derived state and snapshot). Leaving
-- half of each page free lets PostgreSQL update those rows in place (HOT updates: no new index
-- entries), and vacuuming the table sooner keeps dead versions from piling up under load.
ALTER TABLE devices SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02,
                         autovacuum_analyze_scale_factor = 0.05);
