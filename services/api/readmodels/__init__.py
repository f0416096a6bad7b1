"""The API's read models: tables in their own PostgreSQL schema, written only by the projection."""
