"""Signed webhooks: the room that turns a user's event log into HTTP calls (issue 22)."""
