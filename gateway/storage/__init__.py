"""The gateway's storage: the tables, the database engine, the access log."""
