"""What an operation asks for below the field being resolved, known before resolving it.

A resolver that returns many nodes can then load, in one batch, what those nodes will
be asked for, instead of each node's field awaiting its own share.
"""

from __future__ import annotations

from collections.abc import Iterable

from strawberry.types.nodes import SelectedField, Selection

from app.graphql.context import Info


def selected_names(info: Info) -> set[str]:
    """The names of every field selected anywhere under the current one, through
    fragments and at any depth: a superset of the fields that will be resolved there."""
    names: set[str] = set()
    _collect(info.selected_fields, names)
    return names


def _collect(selections: Iterable[Selection], names: set[str]) -> None:
    for selection in selections:
        if isinstance(selection, SelectedField):  # else a fragment: only its fields count
            names.add(selection.name)
        _collect(selection.selections, names)
