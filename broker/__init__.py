"""NATS: the embedded server, connections, streams, the event store and the frame transport.

Contract: knows NATS and JetStream, knows no domain rule. Used by every other package; imports
nothing of kubegate's but `domain` event encoding where a store needs it.
"""
