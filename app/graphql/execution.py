"""The executor of every operation: strawberry's, without two of graphql-core's ways of
keeping an operation's objects alive.

- graphql-core 3.3 runs each event of a subscription on a shallow copy of the
  subscription's executor (`build_per_event_executor`), and the copy shares the memo of
  collected sub-fields with the original. That memo is keyed by the identity of a field
  list each event builds anew, so every event added an entry nothing removed: a live
  subscription grew by ~12 objects (~1.4 KB) per event it delivered, and the full
  collections over them stalled the event loop for a third of a second. Each event's
  executor gets memos of its own, which go when its event is sent.
- The executor hands resolvers `async_helpers`, bound methods of itself: a reference
  cycle that kept every finished operation (its executor, collected fields, results)
  for the garbage collector. Bound weakly, an operation is freed as it returns.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Sequence
from typing import Any

from graphql.pyutils import RefMap
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class LumiExecutor(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        gather = weakref.WeakMethod(self.gather_async_work)
        track = weakref.WeakMethod(self.track_async_work)

        def gather_work(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
            method = gather()
            assert method is not None, "resolvers run while their executor lives"
            return method(values)

        def track_work(values: Sequence[Any]) -> None:
            method = track()
            assert method is not None, "resolvers run while their executor lives"
            method(values)

        self.async_helpers = GraphQLResolveInfoHelpers(gather=gather_work, track=track_work)

    def build_per_event_executor(self, payload: Any) -> LumiExecutor:
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, LumiExecutor)
        executor._relevant_sub_fields = {}
        executor._stream_usages = RefMap()
        return executor
