"""The configured providers of each modality: an ordered failover chain, each vendor
behind its own circuit breaker.

A chain tries its vendors in order. A vendor that fails transiently (or refuses our
credentials) counts a failure on its breaker and the next vendor is tried; after
`threshold` failures in a row the breaker opens and the vendor is skipped for
`cooldown` seconds, then one call probes it (half-open): success closes the breaker,
failure opens it again. A refusal of the input itself (ProviderRejected) is the
input's fault: no failover, no breaker count.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from providers.base import (
    ProviderAuthFailed,
    ProviderError,
    ProviderInvalidRequest,
    ProviderUnavailable,
)


class Named(Protocol):
    name: str


P = TypeVar("P", bound=Named)
R = TypeVar("R")


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass
class CircuitBreaker:
    threshold: int = 5
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a call may go to the vendor now; in half-open, only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at = self.clock()
        self.probing = False

    def released(self) -> None:
        """A call that was allowed did not happen after all: free the probe."""
        self.probing = False


class NoProvider(ProviderUnavailable):
    """Every vendor of the chain is skipped (circuit open) or failed."""

    code = "NO_PROVIDER_AVAILABLE"


def fails_over(error: ProviderError) -> bool:
    """Whether another vendor may succeed where this one failed."""
    return error.transient or isinstance(error, ProviderAuthFailed | ProviderInvalidRequest)


@dataclass
class Chain(Generic[P]):
    """Vendors of one modality in failover order, with a breaker each."""

    members: Sequence[P]
    threshold: int = 5
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a chain needs at least one provider")
        for member in self.members:
            self.breakers.setdefault(
                member.name, CircuitBreaker(self.threshold, self.cooldown, self.clock)
            )

    @property
    def names(self) -> list[str]:
        return [member.name for member in self.members]

    @property
    def primary(self) -> P:
        return self.members[0]

    def named(self, name: str) -> P:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def order(self, only: str | None = None) -> list[P]:
        """Who to try: the one asked for, or the whole chain in order."""
        return [self.named(only)] if only else list(self.members)

    async def call(
        self,
        operation: Callable[[P], Awaitable[R]],
        *,
        only: str | None = None,
        usable: Callable[[P], Awaitable[bool]] | None = None,
    ) -> tuple[P, R]:
        """Runs `operation` on the first vendor that succeeds; returns it and the result.

        `usable` may veto a vendor before the call (no free concurrency slot, say)."""
        last: ProviderError | None = None
        for member in self.order(only):
            breaker = self.breakers[member.name]
            if not breaker.allow():
                continue
            if usable is not None and not await usable(member):
                breaker.released()
                continue
            try:
                result = await operation(member)
            except ProviderError as error:
                if not fails_over(error):
                    breaker.succeeded()  # it answered: the input was refused, not the vendor
                    raise
                breaker.failed()
                last = error
                continue
            except BaseException:
                breaker.released()
                raise
            breaker.succeeded()
            return member, result
        if last is not None:
            raise last
        raise NoProvider(f"no provider available among {', '.join(self.names)}")
