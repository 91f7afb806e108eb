"""Expected failures of the model library."""

from __future__ import annotations

from app.errors import NotFound


class ModelNotFound(NotFound):
    default_message = "model not found"
