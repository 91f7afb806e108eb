"""GraphQL enums whose every value is described.

Values are described by member name, beside the class (`strawberry.enum_value` would
make each member's Python value an `EnumValueDefinition` to the type checker). Every
member needs a description, so a new value cannot go undocumented.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import TypeVar

import strawberry

EnumT = TypeVar("EnumT", bound=type[Enum])


def described_enum(
    enum: EnumT, *, description: str, values: Mapping[str, str], name: str | None = None
) -> EnumT:
    """`enum` as a GraphQL enum (named `name`, else as the class) with each value
    described by `values`; also for an enum of the domain (the state machine's
    statuses), which the schema does not own."""
    unmatched = sorted(set(enum.__members__) ^ set(values))
    assert not unmatched, f"{enum.__name__}: values undescribed or unknown: {unmatched}"
    wrapped = strawberry.enum(enum, name=name, description=description)
    for value in wrapped.__strawberry_definition__.values:  # type: ignore[attr-defined]
        value.description = values[value.name]
    return wrapped


def described(
    *, description: str, values: Mapping[str, str], name: str | None = None
) -> Callable[[EnumT], EnumT]:
    """`described_enum` as a class decorator, for the schema's own enums."""

    def wrap(enum: EnumT) -> EnumT:
        return described_enum(enum, description=description, values=values, name=name)

    return wrap
