"""Limits every operation meets before any resolver runs: depth, aliases, tokens, cost.

Cost weighs list sizes: each field costs 1 times the `first` of every list around it
(100, the largest page, when `first` comes from a variable or is missing), so a query
nesting pages of pages is refused however few fields it names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension
from strawberry.extensions.max_aliases import create_validator as alias_validator
from strawberry.extensions.query_depth_limiter import create_validator as depth_validator

from app.graphql.pagination import MAX_PAGE


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
