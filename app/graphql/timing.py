"""Each operation's duration, for `lumi_graphql_operation_duration_seconds`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from strawberry.extensions import SchemaExtension

from app.metrics import GRAPHQL_DURATION, OperationNames


class OperationTimer(SchemaExtension):
    """Times each operation, labelled by its type and (known) name."""

    def __init__(self, names: OperationNames) -> None:
        super().__init__()
        self.names = names

    @classmethod
    def factory(cls, names: OperationNames) -> Callable[[], OperationTimer]:
        return lambda: cls(names)

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        try:
            kind = context.operation_type.value
        except RuntimeError:  # the document did not parse
            kind = "invalid"
        name = self.names.label(context.operation_name)
        GRAPHQL_DURATION.labels(kind, name).observe(time.perf_counter() - started)
