INSERT INTO resync.schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)
