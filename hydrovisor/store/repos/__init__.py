"""Repositories: one module per aggregate, plain async functions over an asyncpg pool."""
