"""What every operation passes, on every transport, before any resolver runs, in order:
the rate limits (every operation counts, refused or not), valid Unicode in its
variables, the document's size and token limits, then parsing and validation (both
cached, so a repeated document costs neither again).

A refusal never raises out of a hook. Strawberry's streaming path (both websocket
protocols) does not catch what a parse hook raises, so a syntax error or an
over-limit document there ended the operation with no answer. Here a refused
operation keeps its errors and a stand-in document, and strawberry answers those
errors the way each transport answers any other pre-execution error.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    parse,
    validate,
)
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from app.errors import BadRequest, BadUserInput, LimitExceeded, LumiError, RateLimited

_CACHE_SIZE = 256


@dataclass(frozen=True)
class Documents:
    """Parses and validates documents within the size and token limits, with caches
    shared by every operation of the schema."""

    max_chars: int = 100_000
    max_tokens: int = 3000
    hide_suggestions: bool = False
    _parse: Callable[[str], DocumentNode] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        @lru_cache(maxsize=_CACHE_SIZE)
        def cached_parse(query: str) -> DocumentNode:
            return parse(query, max_tokens=self.max_tokens)

        object.__setattr__(self, "_parse", cached_parse)

    def parse(self, query: object) -> DocumentNode:
        """The document, or a GraphQLError that says which limit or syntax rule it broke.
        Its cost is bounded by the limits whatever the client sends."""
        if not isinstance(query, str):
            raise _refusal(BadRequest("the operation's `query` must be a string"))
        if len(query) > self.max_chars:
            raise _refusal(
                LimitExceeded(
                    f"the document is {len(query)} characters long, more than the limit "
                    f"of {self.max_chars}",
                    limit=self.max_chars,
                    scope="document",
                )
            )
        try:
            return self._parse(query)
        except GraphQLSyntaxError as error:
            if "tokens. Parsing aborted" not in error.message:
                raise
            # Over a limit, not wrong: answered as such on every transport (a syntax
            # error closes a graphql-transport-ws connection).
            raise _refusal(
                LimitExceeded(
                    f"the document has more than {self.max_tokens} tokens, the limit",
                    limit=self.max_tokens,
                    scope="tokens",
                )
            ) from None

    def validate(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        rules: tuple[type[ASTValidationRule], ...],
    ) -> list[GraphQLError]:
        return _validate(schema, document, rules, self.hide_suggestions)


@lru_cache(maxsize=_CACHE_SIZE)
def _validate(
    schema: GraphQLSchema,
    document: DocumentNode,
    rules: tuple[type[ASTValidationRule], ...],
    hide_suggestions: bool,
) -> list[GraphQLError]:
    # The two rules strawberry adds to every validation of its own.
    every = (*rules, MaybeNullValidationRule, OneOfInputValidationRule)
    return validate(schema, document, every, hide_suggestions=hide_suggestions)


def _refusal(error: LumiError) -> GraphQLError:
    return GraphQLError(error.message, original_error=error)


def invalid_unicode(value: object, path: str) -> str | None:
    """The path of the first string in `value` that is not valid Unicode (a lone
    surrogate, which JSON's `\\ud800` escapes can carry and no database can store)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = invalid_unicode(key, path) or invalid_unicode(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if found := invalid_unicode(item, f"{path}[{index}]"):
                return found
    return None


def _stand_in(allowed: set[str], name: object) -> DocumentNode:
    """A document that names an operation the transport allows, under the operation name
    the client gave, so that strawberry goes on to answer the refusal's errors."""
    kind = next(
        (k for k in (OperationType.QUERY, OperationType.SUBSCRIPTION) if k.value in allowed),
        OperationType.MUTATION,
    )
    typename = FieldNode(name=NameNode(value="__typename"), arguments=(), directives=())
    operation = OperationDefinitionNode(
        operation=kind,
        name=NameNode(value=name) if isinstance(name, str) and name else None,
        variable_definitions=(),
        directives=(),
        selection_set=SelectionSetNode(selections=(typename,)),
    )
    return DocumentNode(definitions=(operation,))


class Gate(SchemaExtension):
    """The checks above, as one extension; made per operation by `factory`."""

    def __init__(self, documents: Documents) -> None:
        super().__init__()
        self.documents = documents
        self.refusal: GraphQLError | None = None

    @classmethod
    def factory(cls, documents: Documents) -> Callable[[], Gate]:
        return lambda: cls(documents)

    async def on_operation(self) -> AsyncIterator[None]:
        execution = self.execution_context
        self.refusal = await _rate_limit(execution.context)
        if self.refusal is None:
            self.refusal = _untrusted_refusal(execution.context, execution.query)
        if self.refusal is None:
            self.refusal = _variables_refusal(execution.variables)
        yield

    def on_parse(self) -> Iterator[None]:
        execution = self.execution_context
        if self.refusal is None:
            try:
                document = self.documents.parse(execution.query)
                # What the client named, not strawberry's default of the first operation.
                name = getattr(execution, "_provided_operation_name", None)
                self.refusal = _operation_refusal(document, name)
                if self.refusal is None:
                    execution.graphql_document = document
            except GraphQLError as error:
                self.refusal = error
        if self.refusal is not None:
            execution.graphql_document = _stand_in(
                {kind.value for kind in execution.allowed_operations}, execution.operation_name
            )
            execution.pre_execution_errors = [self.refusal]
        yield

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        if execution.pre_execution_errors is None and execution.graphql_document is not None:
            execution.pre_execution_errors = self.documents.validate(
                execution.schema._schema,
                execution.graphql_document,
                tuple(execution.validation_rules),
            )
        yield


def _operation_refusal(document: DocumentNode, name: object) -> GraphQLError | None:
    """The specification's choice of the operation to run: a document of several
    operations needs `operationName`, and the name must be one of them (strawberry ran
    the first operation when none was named)."""
    names = [
        definition.name.value if definition.name else None
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]
    if not names:
        return _refusal(BadRequest("the document has no operation to run"))
    if name is None and len(names) > 1:
        listed = ", ".join(str(n) for n in names)
        return _refusal(
            BadRequest(
                f"the document has {len(names)} operations ({listed}): name the one to run "
                "in `operationName`"
            )
        )
    if name is not None and name not in names:
        return _refusal(BadRequest(f"the document has no operation named {name!r}"))
    return None


def _untrusted_refusal(context: Any, query: object) -> GraphQLError | None:
    """With trusted documents (LUMI_PERSISTED_QUERIES=allowlist) only those run, on every
    transport: a websocket's operations too, which never pass the HTTP view's check."""
    queries = getattr(getattr(context, "deps", None), "persisted_queries", None)
    if queries is None:
        return None
    try:
        queries.check_trusted(query)
    except LumiError as exc:
        return _refusal(exc)
    return None


def _variables_refusal(variables: object) -> GraphQLError | None:
    if variables is None:
        return None
    path = invalid_unicode(variables, "")
    if path is None:
        return None
    name = path.lstrip(".")
    return _refusal(
        BadUserInput(
            f"variable ${name} is not valid Unicode (it holds a lone surrogate)",
            field=name,
        )
    )


async def _rate_limit(context: Any) -> GraphQLError | None:
    """RATE_LIMITED with `retryAfter` when the client address or the user is over its
    rate; every operation counts, whether it goes on to run or to be refused."""
    throttle = getattr(getattr(context, "deps", None), "throttle", None)
    if throttle is None:
        return None
    try:
        viewer_id = await context.viewer_id()
    except LumiError:
        viewer_id = None  # a bad token: its resolver says so; the address still counts
    client = context.request.client
    try:
        await throttle.check(address=client.host if client else None, user_id=viewer_id)
    except RateLimited as exc:
        if isinstance(context.response, Response):  # HTTP: say it the HTTP way too
            retry_after = math.ceil(exc.extensions["retryAfter"])
            context.response.headers["Retry-After"] = str(retry_after)
        return _refusal(exc)
    return None
