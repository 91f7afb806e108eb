"""Limits every operation meets before any resolver runs: document size, tokens, depth,
aliases and cost (the rate limits and the parsing are in `gate.py`); and how many
subscriptions a connection and a user may hold open.

Cost weighs list sizes: each field costs 1 times the size of every list around it. A
page's size is its `first` (its default when omitted or null; 100, the largest page,
when it comes from a variable), and `nodes(ids:)` fetches as many objects as it names,
so a query nesting pages of pages is refused however few fields it names.
Introspection counts too: its lists weigh what they hold in this schema on average
(types, fields per type, arguments per field, ...), so the one full introspection query
that tools send passes while thirty aliased copies of it do not.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from graphql import (
    ASTValidationRule,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
    get_nullable_type,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef
from strawberry.extensions import AddValidationRules, SchemaExtension
from strawberry.extensions.max_aliases import create_validator as alias_validator
from strawberry.extensions.query_depth_limiter import create_validator as depth_validator

from app.errors import LimitExceeded
from app.graphql.gate import Documents, Gate
from app.graphql.pagination import MAX_PAGE

_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 3000
    max_cost: int = 20000
    max_document_chars: int = 100_000

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_depth=settings.graphql_max_depth,
            max_aliases=settings.graphql_max_aliases,
            max_tokens=settings.graphql_max_tokens,
            max_cost=settings.graphql_max_cost,
            max_document_chars=settings.graphql_max_document_chars,
        )

    def documents(self, *, hide_suggestions: bool = False) -> Documents:
        """The parser and validator of this schema's documents, within these limits."""
        return Documents(
            max_chars=self.max_document_chars,
            max_tokens=self.max_tokens,
            hide_suggestions=hide_suggestions,
        )

    def extensions(self, documents: Documents) -> list[Callable[[], SchemaExtension]]:
        # The rule classes are made once: the validation cache keys on them.
        rules: list[type[ASTValidationRule]] = [
            depth_validator(self.max_depth, None),
            alias_validator(self.max_aliases),
            cost_rule(self.max_cost),
        ]
        return [Gate.factory(documents), lambda: AddValidationRules(rules)]


def _page(field: FieldNode, definition: Any) -> int | None:
    """How many items a field fetches, when it takes `first` or `ids`: its `first` (the
    argument's default when omitted or null), the number of `ids` it names, or the
    largest page when a variable says."""
    given = {argument.name.value: argument.value for argument in field.arguments or ()}
    arguments = getattr(definition, "args", None) or {}
    if "first" in arguments:
        value = given.get("first")
        if value is None or isinstance(value, NullValueNode):
            default = arguments["first"].default_value
            return default if isinstance(default, int) else MAX_PAGE
        return int(value.value) if isinstance(value, IntValueNode) else MAX_PAGE
    if "ids" in arguments:
        value = given.get("ids")
        return len(value.values) if isinstance(value, ListValueNode) else MAX_PAGE
    return None


@cache
def introspection_sizes(schema: GraphQLSchema) -> dict[tuple[str, str], float]:
    """How many items each list of the introspection types holds in `schema`, on average
    over the things it is asked of: (type name, field name) -> size."""
    types = list(schema.type_map.values())
    with_fields = [t for t in types if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
    fields = [f for t in with_fields for f in t.fields.values()]
    directives = schema.directives

    def average(total: int, over: int) -> float:
        return total / max(over, 1)

    def count(kind: type, attribute: str) -> int:
        return sum(len(getattr(t, attribute)) for t in types if isinstance(t, kind))

    possible = sum(
        len(schema.get_possible_types(t))
        for t in types
        if isinstance(t, GraphQLInterfaceType | GraphQLUnionType)
    )
    enum_values = sum(len(getattr(t, "values", ())) for t in types)
    return {
        ("__Schema", "types"): len(types),
        ("__Schema", "directives"): len(directives),
        ("__Type", "fields"): average(len(fields), len(types)),
        ("__Type", "inputFields"): average(count(GraphQLInputObjectType, "fields"), len(types)),
        ("__Type", "enumValues"): average(enum_values, len(types)),
        ("__Type", "interfaces"): average(count(GraphQLObjectType, "interfaces"), len(types)),
        ("__Type", "possibleTypes"): average(possible, len(types)),
        ("__Field", "args"): average(sum(len(f.args) for f in fields), len(fields)),
        ("__Directive", "args"): average(sum(len(d.args) for d in directives), len(directives)),
    }


def _field_definition(parent: GraphQLNamedType | None, name: str) -> Any:
    """The definition of field `name` of `parent`, or None where there is none."""
    if name == "__schema":
        return SchemaMetaFieldDef
    if name == "__type":
        return TypeMetaFieldDef
    fields = getattr(parent, "fields", None)
    if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) or fields is None:
        return None
    return fields.get(name)


def cost_rule(max_cost: int) -> type[ValidationRule]:
    class CostRule(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            schema = self.context.schema
            root = schema.get_root_type(node.operation)
            cost = math.ceil(self._cost(node.selection_set, root, 1, frozenset()))
            if cost > max_cost:
                self.report_error(
                    GraphQLError(
                        f"the operation costs {cost}, more than the limit of {max_cost}: "
                        "ask for smaller pages or fewer nested lists",
                        node,
                    )
                )

        def _size(
            self, parent: GraphQLNamedType | None, field: FieldNode, definition: Any
        ) -> float:
            """How many times the field's selection runs per parent: its page, or for an
            introspection list what such a list holds on average, else once."""
            page = _page(field, definition)
            if page is not None:
                return page
            type_ = definition.type if definition is not None else None
            if parent is None or not parent.name.startswith("__"):
                return 1
            if not isinstance(get_nullable_type(type_), GraphQLList):
                return 1
            sizes = introspection_sizes(self.context.schema)
            return sizes.get((parent.name, field.name.value), 1)

        def _cost(
            self,
            selections: SelectionSetNode | None,
            parent: GraphQLNamedType | None,
            factor: float,
            seen: frozenset[str],
        ) -> float:
            if selections is None:
                return 0
            context: ValidationContext = self.context
            schema = context.schema
            total = 0.0
            for selection in selections.selections:
                if isinstance(selection, FieldNode):
                    total += factor
                    definition = _field_definition(parent, selection.name.value)
                    inner = factor * self._size(parent, selection, definition)
                    type_ = definition.type if definition is not None else None
                    named = get_named_type(type_) if type_ is not None else None
                    total += self._cost(selection.selection_set, named, inner, seen)
                elif isinstance(selection, InlineFragmentNode):
                    on = selection.type_condition
                    narrowed = schema.get_type(on.name.value) if on else parent
                    total += self._cost(selection.selection_set, narrowed, factor, seen)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = context.get_fragment(name)
                    if fragment is not None and name not in seen:  # cycles: another rule
                        narrowed = schema.get_type(fragment.type_condition.name.value)
                        total += self._cost(fragment.selection_set, narrowed, factor, seen | {name})
                if total > max_cost * 10:
                    break  # no need to count a bomb to its end
            return total

    return CostRule


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
        self.acquire(connection, user_id)
        try:
            yield
        finally:
            self.release(connection, user_id)

    def acquire(self, connection: object, user_id: str) -> None:
        """One slot, until `release`; LIMIT_EXCEEDED when none is left."""
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

    def release(self, connection: object, user_id: str) -> None:
        _count_down(self._connections, id(connection))
        _count_down(self._users, user_id)


def _count_down(counter: Counter[_K], key: _K) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
