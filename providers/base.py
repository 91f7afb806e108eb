"""Provider protocols, their typed results and typed errors.

Adapters map vendor responses onto these types. They receive keys and base URLs in
their constructors and never read settings themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

# Words of vendors' codes (or messages) for content refused by their moderation.
_CONTENT_POLICY = re.compile(
    r"content[_ ]?policy|moderation|sensitive|inspection|riskdetection|infringement", re.I
)


def refuses_content(code_or_message: str) -> bool:
    """Whether a vendor's error code (or, without one, its message) says the content
    was refused by its moderation: final, whichever vendor is asked."""
    return bool(_CONTENT_POLICY.search(code_or_message))


class ProviderError(Exception):
    """Base of every provider failure. `transient` says whether a retry may help."""

    transient = False
    code = "PROVIDER_ERROR"

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(message)
        self.provider = provider


class ProviderUnavailable(ProviderError):
    """The vendor is down, timed out or answered 5xx; a later attempt may succeed."""

    transient = True
    code = "PROVIDER_UNAVAILABLE"


class ProviderTimeout(ProviderUnavailable):
    """The vendor did not answer, or a vendor job did not finish, in the time allowed."""

    code = "PROVIDER_TIMEOUT"


class ProviderRateLimited(ProviderError):
    """The vendor answered 429; `retry_after` (seconds) is its hint, when it gave one."""

    transient = True
    code = "PROVIDER_RATE_LIMITED"

    def __init__(self, message: str, *, provider: str = "", retry_after: float | None = None):
        super().__init__(message, provider=provider)
        self.retry_after = retry_after


class ProviderRejected(ProviderError):
    """The vendor refused the input (prompt rejected, image invalid): retrying won't help."""

    code = "PROVIDER_REJECTED"


class ProviderInvalidRequest(ProviderError):
    """The vendor refused our request's parameters (a 400 that is not about the content:
    a size or option this model does not take). Not the user's input: another vendor of
    the chain may take the request, but asking this one again will not help."""

    code = "PROVIDER_INVALID_REQUEST"


class ProviderAuthFailed(ProviderError):
    """The vendor refused our credentials (401/403): an operator must fix the settings."""

    code = "PROVIDER_AUTH_FAILED"


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One generated image: either its bytes, or a (short-lived) vendor URL to copy."""

    content_type: str
    width: int
    height: int
    data: bytes | None = None
    url: str | None = None


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a finished 3D job. `format` is lower case: glb, obj, mtl, png, zip ...

    A `zip` holds an OBJ with its MTL and textures; the pipeline unpacks and stores them.
    """

    format: str
    content_type: str
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ModelJobStatus:
    """A snapshot of a vendor 3D job.

    `progress` is the vendor's own percentage (0-100) or None when it reports none;
    `files` is filled once `state` is SUCCEEDED. A FAILED job is `transient` when the
    vendor's own fault ended it (an internal error): a new job may well succeed.
    """

    state: JobState
    progress: float | None = None
    files: list[ModelFile] = field(default_factory=list)
    preview: ModelFile | None = None
    error_code: str | None = None
    error_message: str | None = None
    transient: bool = False


@runtime_checkable
class PromptOptimizer(Protocol):
    """An LLM that rewrites one prompt into `count` distinct variants."""

    name: str

    async def optimize(self, prompt: str, count: int) -> list[str]: ...


@runtime_checkable
class ImageGenerator(Protocol):
    name: str

    async def generate(self, prompt: str, *, seed: int, width: int, height: int) -> ImageResult: ...


@runtime_checkable
class ModelGenerator(Protocol):
    """A 3D vendor: a job is submitted once, then polled until it finishes.

    `typical_seconds` is how long a job usually takes; it drives the progress
    estimate when the vendor reports no percentage.
    """

    name: str
    typical_seconds: float

    async def submit(
        self, image: bytes, content_type: str, *, prompt: str, format: str = "glb"
    ) -> str:
        """Starts a job turning `image` into a model in `format` (glb or obj); its id."""
        ...

    async def poll(self, vendor_job_id: str) -> ModelJobStatus: ...


@runtime_checkable
class CancelsJobs(Protocol):
    """A 3D vendor that can stop a job nobody wants any more."""

    async def cancel(self, vendor_job_id: str) -> None: ...
