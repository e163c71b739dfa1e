"""Alembic migrations of the CRM database."""
