"""Infrastructure every batchyard service shares: event store, bus, settings, logging."""
