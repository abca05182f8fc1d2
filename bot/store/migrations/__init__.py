"""Alembic migrations of the call-record store (script_location; see alembic.ini)."""
