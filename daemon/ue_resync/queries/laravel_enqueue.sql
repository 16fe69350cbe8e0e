-- import-laravel: one pending Laravel job becomes a resync job of its UE, due when Laravel
-- would have run it (now when that is past), coalesced with the UE's queued job as usual.
SELECT e.job_id, e.coalesced
FROM resync.enqueue(array[%(unit)s::bigint], array[%(reason)s::text],
                    greatest(%(due)s::timestamptz - now(), interval '0')) e
