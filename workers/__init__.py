"""Dramatiq actors: one per pipeline stage, thin and idempotent."""
