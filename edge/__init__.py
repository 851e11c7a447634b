"""The HTTPS front door: kubectl proxy (mTLS), admin API, console, CA and kubeconfigs.

Contract: protocol apart from policy. Server wiring never decides access; a request becomes an
access request and a pure `domain` function decides.
"""
