"""The in-cluster agent: request frames from NATS to the kube-apiserver, with JIT service accounts.

Contract: dials out only. Never trusts a frame it cannot decode; never writes a grant.
"""
