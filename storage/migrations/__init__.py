"""Alembic migrations of the storage schema, run programmatically by :mod:`storage.migrate`."""
