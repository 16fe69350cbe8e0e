"""What tests/ and bench/ (chaos included) share to run ue-resync for real.

- `support.postgres`: one PostgreSQL server, embedded or given by a DSN; databases on it.
- `support.replication`: a primary and its streaming replica, made here (failover).
- `support.pgbouncer`: Debian's pgbouncer in front of a server.
- `support.processes`: every process the tests and benchmarks start (`ue-resync work`, any other
  ue-resync command, the baseline worker, the chaos writers), and slots that restart one.
- `support.env`: the environment a child process gets, scrubbed of the caller's settings.
- `support.poll`: wait for a condition, with a deadline.
- `support.catalogue`: course units and their elements, one row or thousands at a time.

It imports nothing from tests/ or bench/, and is never installed: both run from a checkout."""
