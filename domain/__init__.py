"""kubegate's domain: events, aggregates, commands and policy rules.

Contract: pure Python. No I/O, no asyncio, no clocks read behind your back: time always comes in
as an argument. Imports nothing of kubegate's other packages and no network or storage library
(nats, aiohttp, duckdb, kubernetes_asyncio).
"""
