"""Limits every operation meets before any resolver runs: depth, aliases, tokens, cost,
and the rate limits of its client address and user; and how many subscriptions a
connection and a user may hold open.

Cost weighs list sizes: each field costs 1 times the `first` of every list around it
(100, the largest page, when `first` comes from a variable or is missing), so a query
nesting pages of pages is refused however few fields it names.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from graphql import (
    ASTValidationRule,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from starlette.responses import Response
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension
from strawberry.extensions.max_aliases import create_validator as alias_validator
from strawberry.extensions.query_depth_limiter import create_validator as depth_validator

from app.errors import LimitExceeded, LumiError, RateLimited
from app.graphql.pagination import MAX_PAGE

_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 3000
    max_cost: int = 20000

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_depth=settings.graphql_max_depth,
            max_aliases=settings.graphql_max_aliases,
            max_tokens=settings.graphql_max_tokens,
            max_cost=settings.graphql_max_cost,
        )

    def extensions(self) -> list[Callable[[], SchemaExtension]]:
        # The rule classes are made once: the validation cache keys on them, and
        # strawberry's own limiter extensions would make new ones per operation.
        rules: list[type[ASTValidationRule]] = [
            depth_validator(self.max_depth, None),
            alias_validator(self.max_aliases),
            cost_rule(self.max_cost),
        ]
        return [
            lambda: MaxTokensLimiter(max_token_count=self.max_tokens),
            lambda: AddValidationRules(rules),
        ]


def _first(field: FieldNode) -> int | None:
    """The page size a field asks for: its `first`, or the largest page when unknown."""
    for argument in field.arguments or ():
        if argument.name.value == "first":
            value = argument.value
            return int(value.value) if isinstance(value, IntValueNode) else MAX_PAGE
    return None


def cost_rule(max_cost: int) -> type[ValidationRule]:
    class CostRule(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            cost = self._cost(node.selection_set, 1, set())
            if cost > max_cost:
                self.report_error(
                    GraphQLError(
                        f"the operation costs {cost}, more than the limit of {max_cost}: "
                        "ask for smaller pages or fewer nested lists",
                        node,
                    )
                )

        def _cost(self, selections: SelectionSetNode | None, factor: int, seen: set[str]) -> int:
            if selections is None:
                return 0
            context: ValidationContext = self.context
            total = 0
            for selection in selections.selections:
                if isinstance(selection, FieldNode):
                    total += factor
                    page = _first(selection)
                    inner = factor * page if page else factor
                    total += self._cost(selection.selection_set, inner, seen)
                elif isinstance(selection, InlineFragmentNode):
                    total += self._cost(selection.selection_set, factor, seen)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = context.get_fragment(name)
                    if fragment is not None and name not in seen:  # cycles: another rule
                        total += self._cost(fragment.selection_set, factor, seen | {name})
                if total > max_cost * 10:
                    break  # no need to count a bomb to its end
            return total

    return CostRule


class RateLimits(SchemaExtension):
    """Counts each operation that parsed and validated against the rate limits of its
    client address and its user, before any resolver runs. A refused operation is
    answered RATE_LIMITED with `retryAfter` (seconds) and counts against nothing.

    It must come after the ValidationCache extension: that one validates on entering
    `on_validate`, and this one, entering next, adds its refusal to the outcome, which
    strawberry reads before any hook exits.
    """

    async def on_validate(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        throttle = getattr(getattr(context, "deps", None), "throttle", None)
        if throttle is not None and not execution.pre_execution_errors:
            try:
                viewer = await context.viewer()
            except LumiError:
                viewer = None  # a bad token: its resolver says so; the address still counts
            client = context.request.client
            try:
                await throttle.check(
                    address=client.host if client else None,
                    user_id=viewer.id if viewer else None,
                )
            except RateLimited as exc:
                execution.pre_execution_errors = [GraphQLError(exc.message, original_error=exc)]
                if isinstance(context.response, Response):  # HTTP: say it the HTTP way too
                    retry_after = math.ceil(exc.extensions["retryAfter"])
                    context.response.headers["Retry-After"] = str(retry_after)
        yield


class SubscriptionSlots:
    """Open subscriptions per connection and per user, in this API process."""

    def __init__(self, *, per_connection: int, per_user: int) -> None:
        self.per_connection = per_connection
        self.per_user = per_user
        self._connections: Counter[int] = Counter()
        self._users: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, connection: object, user_id: str) -> Iterator[None]:
        """One slot for a subscription's lifetime; LIMIT_EXCEEDED when none is left."""
        key = id(connection)
        if self._connections[key] >= self.per_connection:
            raise LimitExceeded(
                f"this connection already has {self.per_connection} subscriptions open, "
                "the most it may: complete one first",
                limit=self.per_connection,
                scope="connection",
            )
        if self._users[user_id] >= self.per_user:
            raise LimitExceeded(
                f"you already have {self.per_user} subscriptions open, the most you may: "
                "complete one first",
                limit=self.per_user,
                scope="user",
            )
        self._connections[key] += 1
        self._users[user_id] += 1
        try:
            yield
        finally:
            _count_down(self._connections, key)
            _count_down(self._users, user_id)


def _count_down(counter: Counter[_K], key: _K) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
