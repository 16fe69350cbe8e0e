-- Bounds the resync transaction: statement and lock waits, both --timeout.
SELECT set_config('statement_timeout', %(timeout)s, true),
       set_config('lock_timeout', %(timeout)s, true)
