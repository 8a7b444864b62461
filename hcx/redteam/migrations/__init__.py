"""Alembic migrations of the red-team database, run by :func:`hcx.redteam.db.open_database`."""
