"""Tests of hydrovisor.store against a real embedded PostgreSQL."""
