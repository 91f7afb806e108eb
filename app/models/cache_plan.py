"""Which operations the response cache may answer, decided once per document.

An operation is cacheable when every field it selects is public data that reads the
same for every viewer (the table below), or a per-viewer flag (`likedByMe`,
`favoritedByMe`) the cache fills in for each viewer. Anything else (`me`, requests,
owner-only fields, introspection, mutations, directives other than @skip/@include)
runs as usual.

A cacheable document is rewritten once: each selection of a `Model` also asks for its
id (under `__lumi_m<N>`, N naming which of its keys are per-viewer flags) and its
visibility (`__lumi_p`), each `PublicProfile` for its id (`__lumi_u`). From those the
cache learns, without touching any resolver, which models and owners an answer shows
(to drop it when they change), that they are all public, and where the flags go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from graphql import (
    ArgumentNode,
    DocumentNode,
    EnumValueNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    VariableNode,
    validate,
)

SHARED, LIKE, FAVORITE = "SHARED", "LIKE", "FAVORITE"
HIDDEN = "__lumi_"
MODEL_MARK, VISIBILITY_MARK, OWNER_MARK = "__lumi_m", "__lumi_p", "__lumi_u"

_MODEL = dict.fromkeys(
    (
        *("id", "name", "description", "format", "fileSize", "status", "visibility"),
        *("publishedAt", "likeCount", "favoriteCount", "downloadCount", "viewCount"),
        "provider",
        *("createdAt", "files", "fileUrl", "previewUrl", "owner"),
    ),
    SHARED,
)
# Per type: the fields every viewer reads alike (SHARED) and the viewer's own flags.
# `Model.visibility` reads PUBLIC in every answer kept (the cache checks), and
# `sourceRequest` and `sourceImage`, the owner's alone, are not listed.
FIELDS: Mapping[str, Mapping[str, str]] = {
    "Query": {"publicModels": SHARED, "model": SHARED},
    "ModelConnection": {"edges": SHARED, "pageInfo": SHARED, "totalCount": SHARED},
    "ModelEdge": {"cursor": SHARED, "node": SHARED},
    "PageInfo": dict.fromkeys(
        ("hasNextPage", "hasPreviousPage", "startCursor", "endCursor"), SHARED
    ),
    "Model": {**_MODEL, "likedByMe": LIKE, "favoritedByMe": FAVORITE},
    "ModelFile": dict.fromkeys(("name", "contentType", "size", "url", "converted"), SHARED),
    "PublicProfile": {"id": SHARED, "displayName": SHARED},
}
_DIRECTIVES = frozenset({"skip", "include"})
_N = TypeVar("_N", OperationDefinitionNode, FragmentDefinitionNode, InlineFragmentNode, FieldNode)


@dataclass(frozen=True, slots=True)
class Plan:
    """A cacheable operation: the document to run for the shared answer, the per-viewer
    keys of each `__lumi_m<N>` mark, and the `sort` argument of each gallery field."""

    document: DocumentNode
    operation_name: str | None
    flags: tuple[tuple[tuple[str, str], ...], ...]
    sorts: tuple[ArgumentNode | None, ...]

    def listing_tags(self, variables: Mapping[str, object]) -> set[str]:
        """The gallery orders this answer lists (tags `listing:<SORT>`), and `listings`."""
        if not self.sorts:
            return set()
        tags = {"listings"}
        for argument in self.sorts:
            value: object = "LATEST"
            if argument is not None and isinstance(argument.value, EnumValueNode):
                value = argument.value.value
            elif argument is not None and isinstance(argument.value, VariableNode):
                value = variables.get(argument.value.name.value) or "LATEST"
            tags.add(f"listing:{value}")
        return tags


@dataclass
class _Walk:
    fragments: dict[str, FragmentDefinitionNode]
    rewritten: dict[str, FragmentDefinitionNode | None] = field(default_factory=dict)
    flags: list[tuple[tuple[str, str], ...]] = field(default_factory=lambda: [()])
    sorts: list[ArgumentNode | None] = field(default_factory=list)


def analyze(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> Plan | None:
    """The plan of the named operation (or the only one), or None when not cacheable."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [
        o
        for o in operations
        if operation_name is None or (o.name and o.name.value == operation_name)
    ]
    if len(chosen) != 1 or chosen[0].operation is not OperationType.QUERY:
        return None
    operation = chosen[0]
    if operation.directives:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    walk = _Walk(fragments)
    selection_set = _rewrite(operation.selection_set, "Query", walk)
    if selection_set is None:
        return None
    rewritten = DocumentNode(
        definitions=(
            _with(operation, selection_set),
            *(f for f in walk.rewritten.values() if f is not None),
        )
    )
    if validate(schema, rewritten):
        return None  # never expected: the marks are plain fields of their types
    return Plan(rewritten, operation_name, tuple(walk.flags), tuple(walk.sorts))


def _rewrite(
    selection_set: SelectionSetNode, type_name: str, walk: _Walk
) -> SelectionSetNode | None:
    allowed = FIELDS.get(type_name)
    if allowed is None:
        return None
    selections: list[SelectionNode] = []
    flags: list[tuple[str, str]] = []
    for selection in selection_set.selections:
        if any(d.name.value not in _DIRECTIVES for d in selection.directives or ()):
            return None
        done = _selection(selection, type_name, allowed, walk, flags)
        if done is None:
            return None
        selections.append(done)
    if type_name == "Model":
        index = 0  # flags[0]: none
        if flags:
            walk.flags.append(tuple(flags))
            index = len(walk.flags) - 1
        selections += [_mark(f"{MODEL_MARK}{index}", "id"), _mark(VISIBILITY_MARK, "visibility")]
    elif type_name == "PublicProfile":
        selections.append(_mark(OWNER_MARK, "id"))
    return SelectionSetNode(selections=tuple(selections))


def _selection(
    selection: SelectionNode,
    type_name: str,
    allowed: Mapping[str, str],
    walk: _Walk,
    flags: list[tuple[str, str]],
) -> SelectionNode | None:
    if isinstance(selection, FieldNode):
        return _field(selection, type_name, allowed, walk, flags)
    if isinstance(selection, InlineFragmentNode):
        inner = selection.type_condition.name.value if selection.type_condition else type_name
        if inner != type_name:
            return None
        rewritten = _rewrite(selection.selection_set, inner, walk)
        return None if rewritten is None else _with(selection, rewritten)
    if isinstance(selection, FragmentSpreadNode):
        return selection if _fragment(selection.name.value, type_name, walk) else None
    return None


def _field(
    node: FieldNode,
    type_name: str,
    allowed: Mapping[str, str],
    walk: _Walk,
    flags: list[tuple[str, str]],
) -> FieldNode | None:
    name = node.name.value
    key = node.alias.value if node.alias else name
    if key.startswith(HIDDEN):
        return None
    if name == "__typename":
        return node
    kind = allowed.get(name)
    if kind is None:
        return None
    if kind != SHARED:
        flags.append((key, kind))
    if name == "publicModels":
        walk.sorts.append(next((a for a in node.arguments or () if a.name.value == "sort"), None))
    if node.selection_set is None:
        return node
    inner = _FIELD_TYPES.get((type_name, name))
    if inner is None:
        return None
    rewritten = _rewrite(node.selection_set, inner, walk)
    return None if rewritten is None else _with(node, rewritten)


# The named type of each field above that has a selection.
_FIELD_TYPES = {
    ("Query", "publicModels"): "ModelConnection",
    ("Query", "model"): "Model",
    ("ModelConnection", "edges"): "ModelEdge",
    ("ModelConnection", "pageInfo"): "PageInfo",
    ("ModelEdge", "node"): "Model",
    ("Model", "files"): "ModelFile",
    ("Model", "owner"): "PublicProfile",
}


def _fragment(name: str, type_name: str, walk: _Walk) -> bool:
    """Rewrites a fragment once, wherever it is spread; whether it is cacheable."""
    if name not in walk.rewritten:
        walk.rewritten[name] = None  # a cycle is invalid anyway: stop at it
        fragment = walk.fragments.get(name)
        if fragment is None or fragment.directives:
            return False
        inner = fragment.type_condition.name.value
        rewritten = _rewrite(fragment.selection_set, inner, walk)
        if rewritten is not None:
            walk.rewritten[name] = _with(fragment, rewritten)
    fragment = walk.rewritten[name]
    return fragment is not None and fragment.type_condition.name.value == type_name


def _mark(alias: str, name: str) -> FieldNode:
    return FieldNode(
        alias=NameNode(value=alias), name=NameNode(value=name), arguments=(), directives=()
    )


def _with(node: _N, selection_set: SelectionSetNode) -> _N:
    """A copy of an AST node with another selection set (graphql-core's nodes are
    shared by its parse cache: never changed in place)."""
    return dataclasses.replace(node, selection_set=selection_set)
