SELECT to_regclass('resync.schema_migrations') IS NOT NULL AS present
