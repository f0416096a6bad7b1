"""The four batchyard services; they meet only on the bus and in the store."""
