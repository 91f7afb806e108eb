"""The executor of every operation: strawberry's, minus a leak of graphql-core's.

graphql-core 3.3 runs each event of a subscription on a shallow copy of the
subscription's executor (`build_per_event_executor`), and the copy shares the memo of
collected sub-fields with the original. That memo is keyed by the identity of a field
list that each event builds anew, so every event added an entry that nothing removed:
a live subscription grew by about 1.4 KB per event it delivered, and the full garbage
collections over those entries stalled the event loop for a third of a second. Each
event's executor gets memos of its own, which go when its event is sent.
"""

from __future__ import annotations

from typing import Any

from graphql.pyutils import RefMap
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class LumiExecutor(StrawberryGraphQLCoreExecutionContext):
    def build_per_event_executor(self, payload: Any) -> LumiExecutor:
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, LumiExecutor)
        executor._relevant_sub_fields = {}
        executor._stream_usages = RefMap()
        return executor
