"""The `batchyard` command: a client of the HTTP API, plus `up`, which runs the whole system locally."""
