-- import-laravel: the imported rows leave Laravel's table, in the import's transaction.
DELETE FROM {table} WHERE id = ANY (%(ids)s::bigint[])
