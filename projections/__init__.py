"""Read models fed from the event log: policy, sessions, audit (DuckDB).

Contract: a projection is a follower. It applies events in stream order, knows the last stream
sequence it applied and whether it has caught up, and never writes to the log.
"""
