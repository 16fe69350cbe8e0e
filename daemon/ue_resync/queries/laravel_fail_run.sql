-- import-laravel: the imported run failed, with Laravel's exception messages and SQLSTATE.
SELECT resync.fail_runs(array[%(run_id)s::bigint], array['failed'], array[%(error)s::text],
                        array[%(sqlstate)s::text])
