SELECT resync.fail_runs(%(run_ids)s::bigint[], %(outcomes)s::text[], %(errors)s::text[],
                        %(sqlstates)s::text[])
