"""Permissions every mutation and subscription declares (a test checks none forgets)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from app.graphql.context import Info


class IsAuthenticated(BasePermission):
    """The caller presented a valid token. Ownership is checked by each service."""

    message = "a valid bearer token is required"
    error_extensions = {"code": "UNAUTHENTICATED"}

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return await info.context.viewer_id() is not None


class IsAnyone(BasePermission):
    """Open to anonymous callers too: declared so the choice is explicit."""

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        await info.context.viewer_id()  # a bad token is still an error
        return True
