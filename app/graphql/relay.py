"""Relay's object identification: the `Node` interface, opaque global ids, and the
`node` and `nodes` root fields.

A global id is base64 of `Type:rowid` (as graphql-relay-js writes them), `Type` being
the GraphQL type's name; clients treat it as opaque. Every `id` of a `Node` is one, and
so is every field that names an object (`requestId`, `imageId`, ...), so that a client
compares like with like. Arguments take either form: clients that kept row ids from
before global ids keep working (`accept_row_or_global_ids`).

A type implements `Node` by subclassing it and giving a `resolve_nodes` classmethod
(`Refetchable`): the objects of these ids the viewer may see, None for the others. The
kit finds the class through the schema by the id's type name, so it imports no room.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Protocol, cast

import strawberry
from strawberry.extensions.field_extension import FieldExtension
from strawberry.types.base import StrawberryList, StrawberryObjectDefinition, StrawberryOptional

from app.errors import BadUserInput, NotFound
from app.graphql.context import Info
from app.graphql.pagination import MAX_PAGE
from app.graphql.permissions import IsAnyone

if TYPE_CHECKING:
    from strawberry.types.field import StrawberryField

# A row id (app.tables.base.new_id) and a GraphQL type name.
_ROW_ID = re.compile(r"[0-9a-f]{32}")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")


class NodeNotFound(NotFound):
    """Nothing the viewer may see has this id: absent, or someone else's private object
    (the two answer alike, so an id reveals nothing)."""

    default_message = "nothing with this id"


def global_id(type_name: str, row_id: str) -> strawberry.ID:
    """The opaque id of the object of type `type_name` stored under `row_id`."""
    return strawberry.ID(base64.b64encode(f"{type_name}:{row_id}".encode()).decode())


def global_id_or_none(type_name: str, row_id: str | None) -> strawberry.ID | None:
    return global_id(type_name, row_id) if row_id else None


def parse_global_id(value: str) -> tuple[str, str] | None:
    """(type name, row id) of a well-formed global id; None for anything else (a row id
    among them: 32 hex digits decode to bytes that name no type)."""
    try:
        text = base64.b64decode(value.encode(), validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        return None
    type_name, colon, row_id = text.partition(":")
    if not colon or not _TYPE_NAME.fullmatch(type_name) or not _ROW_ID.fullmatch(row_id):
        return None
    return type_name, row_id


def row_id(value: str) -> str:
    """The row id an argument names, given as a global id or as the row id itself. A
    value that is neither is passed on unchanged, for the room to refuse as it always has
    (BAD_USER_INPUT)."""
    parsed = parse_global_id(value)
    return parsed[1] if parsed else value


@strawberry.interface(
    description="An object with a global id: `node(id:)` fetches it again (Relay's "
    "object identification)."
)
class Node:
    id: strawberry.ID = strawberry.field(
        description="Global id of the object: opaque, unique across all types, stable. "
        "Arguments that name an object take it."
    )


class Refetchable(Protocol):
    """What a `Node` type gives to be fetched by id."""

    @classmethod
    async def resolve_nodes(cls, info: Info, ids: Sequence[str]) -> Sequence[Node | None]: ...


def _node_type(info: Info, type_name: str) -> type[Refetchable] | None:
    definition = info.schema.get_type_by_name(type_name)
    if not isinstance(definition, StrawberryObjectDefinition) or definition.is_interface:
        return None
    if not issubclass(definition.origin, Node):
        return None
    return cast("type[Refetchable]", definition.origin)


async def load_nodes(info: Info, ids: Sequence[str]) -> list[Node | NodeNotFound]:
    """The objects of these global ids, in order; NodeNotFound for each the viewer may not
    see. BAD_USER_INPUT for an id that is not a global id of a `Node` type. One batch per
    type, one type after the other (they may share the operation's one session)."""
    wanted: dict[str, list[tuple[int, str]]] = {}
    for position, value in enumerate(ids):
        parsed = parse_global_id(value)
        if parsed is None or _node_type(info, parsed[0]) is None:
            raise BadUserInput(f"{value!r} is not a global id", field="id")
        wanted.setdefault(parsed[0], []).append((position, parsed[1]))
    found: list[Node | NodeNotFound] = [NodeNotFound() for _ in ids]
    for type_name, entries in wanted.items():
        node_type = _node_type(info, type_name)
        assert node_type is not None
        nodes = await node_type.resolve_nodes(info, [row for _, row in entries])
        for (position, _), node in zip(entries, nodes, strict=True):
            found[position] = node if node is not None else NodeNotFound()
    return found


async def load_node(info: Info, type_name: str, row: str) -> Node | None:
    """The object of type `type_name` under `row`, if the viewer may see it: how a type
    links to another room's type without importing it."""
    node_type = _node_type(info, type_name)
    assert node_type is not None, f"{type_name} is a Node type of this schema"
    return (await node_type.resolve_nodes(info, [row]))[0]


class GlobalIdArguments(FieldExtension):
    """Marks a field whose ID arguments are global ids, read as given (`node`, `nodes`):
    `accept_row_or_global_ids` leaves it alone."""


class RowIds(FieldExtension):
    """Hands the field's resolver the row id of each ID argument, whether the client sent
    the global id or the row id."""

    def __init__(self) -> None:
        self.single: list[str] = []
        self.lists: list[str] = []

    def apply(self, field: StrawberryField) -> None:
        for argument in field.arguments:
            shape = _id_shape(argument.type)
            if shape == "one":
                self.single.append(argument.python_name)
            elif shape == "many":
                self.lists.append(argument.python_name)

    def map_arguments(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        for name in self.single:
            if isinstance(kwargs.get(name), str):
                kwargs[name] = row_id(kwargs[name])
        for name in self.lists:
            if isinstance(kwargs.get(name), list):
                kwargs[name] = [row_id(v) if isinstance(v, str) else v for v in kwargs[name]]
        return kwargs


def _id_shape(type_: Any) -> str | None:
    if isinstance(type_, StrawberryOptional):
        return _id_shape(type_.of_type)
    if isinstance(type_, StrawberryList):
        return "many" if _id_shape(type_.of_type) == "one" else None
    return "one" if type_ is strawberry.ID else None


def accept_row_or_global_ids(*roots: type) -> None:
    """Gives every root field of `roots` that takes an ID argument the `RowIds` extension
    (once: the schema may be built many times), but those marked `GlobalIdArguments`."""
    for root in roots:
        definition: StrawberryObjectDefinition = root.__strawberry_definition__  # type: ignore[attr-defined]
        for field in definition.fields:
            marked = (RowIds, GlobalIdArguments)
            if any(isinstance(e, marked) for e in field.extensions):
                continue
            if any(_id_shape(a.type) for a in field.arguments):
                field.extensions.append(RowIds())


GlobalIdArg = Annotated[
    strawberry.ID, strawberry.argument(description="A global id (a `Node`'s `id`).")
]


@strawberry.type
class NodeQueries:
    @strawberry.field(
        description="The object with this global id, refetched. Null, with NOT_FOUND in "
        "`errors`, when the viewer may not see it (someone else's private object answers "
        "exactly as a missing one); BAD_USER_INPUT when the id is not a global id.",
        permission_classes=[IsAnyone],
        extensions=[GlobalIdArguments()],
    )
    async def node(self, info: Info, id: GlobalIdArg) -> Node | None:
        [found] = await load_nodes(info, [id])
        if isinstance(found, NodeNotFound):
            raise found
        return found

    @strawberry.field(
        description=f"The objects with these global ids (at most {MAX_PAGE}), in order. "
        "Each one the viewer may not see is null, with a NOT_FOUND error at its position.",
        permission_classes=[IsAnyone],
        extensions=[GlobalIdArguments()],
    )
    async def nodes(
        self,
        info: Info,
        ids: Annotated[
            list[strawberry.ID],
            strawberry.argument(description="Global ids (`Node`'s `id`), any types mixed."),
        ],
    ) -> list[Node | None]:
        if len(ids) > MAX_PAGE:
            raise BadUserInput(f"at most {MAX_PAGE} ids", field="ids")
        # graphql-core completes an error in a list as null plus that error at its path
        return cast("list[Node | None]", await load_nodes(info, ids))
