"""Read models fed from the event log: policy, sessions, audit (DuckDB).

Contract: a projection is a follower. It applies events in stream order, knows the last stream
sequence it applied and whether it has caught up, and never writes to the log.

- `runner`: `ProjectionRunner` follows KG_CONTROL and/or KG_ACTIVITY and hands `LogRecord`s
  (`records`) to a model's `apply` or `apply_batch`; caught-up, lag, staleness, metrics.
- `audit` (+ `audit_schema`): the DuckDB audit store, one typed table per event family.
- `sessions`: console sessions, certificates, JIT service accounts, open kubectl requests.
"""
