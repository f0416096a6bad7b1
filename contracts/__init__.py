"""Wire contracts of batchyard: every event and command as a frozen pydantic model, and the bus subjects.

Nothing in this package does I/O; every service imports it, and `make contracts` generates the JSON
Schema and AsyncAPI documents from it.
"""
