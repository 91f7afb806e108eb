"""Expected failures of the model library."""

from __future__ import annotations

from app.errors import BadUserInput, NotFound


class ModelNotFound(NotFound):
    default_message = "model not found"


class RankingExpired(BadUserInput):
    """A counter sort's cursor names a ranking snapshot that has been purged."""

    def __init__(self) -> None:
        super().__init__(
            "this page's ranking has expired; start again from the first page", field="after"
        )
