"""What tests/ and bench/ (chaos included) share to run ue-resync for real.

- `support.postgres`: one PostgreSQL server, embedded or given by a DSN; databases on it.
- `support.daemon`: `ue-resync work` (or any ue-resync command) as a subprocess.
- `support.env`: the environment a child process gets, scrubbed of the caller's settings.
- `support.poll`: wait for a condition, with a deadline.
- `support.catalogue`: course units and their elements, one row or thousands at a time.

It imports nothing from tests/ or bench/, and is never installed: both run from a checkout."""
