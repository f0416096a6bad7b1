"""The NATS JetStream bus: stream set-up, the outbox relay, and consumer helpers."""
