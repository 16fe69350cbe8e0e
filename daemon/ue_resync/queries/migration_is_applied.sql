SELECT EXISTS (SELECT 1 FROM resync.schema_migrations WHERE version = %(version)s) AS applied
