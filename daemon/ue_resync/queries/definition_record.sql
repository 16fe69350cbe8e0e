INSERT INTO resync.schema_definitions (name, checksum)
VALUES (%(name)s, %(checksum)s)
ON CONFLICT (name) DO UPDATE
SET checksum = excluded.checksum, applied_at = now(), applied_by = current_user
