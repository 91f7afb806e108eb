"""The request state machine: Lumi's 11 statuses, 4 phases and every legal transition.

Pure: no I/O. `advance` is the only way a request's status, step or progress changes;
the repository persists what it returns together with the event row it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Status(StrEnum):
    IMAGE_PENDING = "IMAGE_PENDING"
    IMAGE_GENERATING = "IMAGE_GENERATING"
    IMAGE_COMPLETED = "IMAGE_COMPLETED"
    IMAGE_FAILED = "IMAGE_FAILED"
    MODEL_PENDING = "MODEL_PENDING"
    MODEL_GENERATING = "MODEL_GENERATING"
    MODEL_COMPLETED = "MODEL_COMPLETED"
    MODEL_FAILED = "MODEL_FAILED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Phase(StrEnum):
    IMAGE_GENERATION = "IMAGE_GENERATION"
    AWAITING_SELECTION = "AWAITING_SELECTION"
    MODEL_GENERATION = "MODEL_GENERATION"
    COMPLETED = "COMPLETED"


S = Status

# Statuses after which nothing happens without a user's action: subscriptions end there.
# IMAGE_FAILED and MODEL_FAILED say which stage failed; FAILED follows them in the same
# transaction (refunding what was not delivered), and `retryRequest` resumes from it.
FINAL: frozenset[Status] = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
RESTING: frozenset[Status] = FINAL

_ANY_ACTIVE = frozenset(Status) - FINAL

# to-status → the statuses it may be entered from. A status may also "advance" to
# itself: that is a progress step inside it (a new step name or a higher figure).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.IMAGE_PENDING: frozenset({S.FAILED}),
    S.IMAGE_GENERATING: frozenset({S.IMAGE_PENDING, S.FAILED}),
    S.IMAGE_COMPLETED: frozenset({S.IMAGE_GENERATING}),
    S.IMAGE_FAILED: frozenset({S.IMAGE_PENDING, S.IMAGE_GENERATING}),
    S.MODEL_PENDING: frozenset({S.IMAGE_COMPLETED, S.FAILED}),
    S.MODEL_GENERATING: frozenset({S.MODEL_PENDING}),
    S.MODEL_COMPLETED: frozenset({S.MODEL_GENERATING}),
    S.MODEL_FAILED: frozenset({S.MODEL_PENDING, S.MODEL_GENERATING}),
    S.COMPLETED: frozenset({S.MODEL_COMPLETED}),
    S.FAILED: _ANY_ACTIVE,
    S.CANCELLED: _ANY_ACTIVE,
}

# Statuses that may repeat as progress steps (a retry, a new figure). Final ones and
# the stage failures may not: a step there would be an event nobody waits for.
_STEPPABLE = frozenset({S.IMAGE_PENDING, S.IMAGE_GENERATING, S.MODEL_PENDING, S.MODEL_GENERATING})

_PHASE_OF: dict[Status, Phase] = {
    S.IMAGE_PENDING: Phase.IMAGE_GENERATION,
    S.IMAGE_GENERATING: Phase.IMAGE_GENERATION,
    S.IMAGE_FAILED: Phase.IMAGE_GENERATION,
    S.MODEL_PENDING: Phase.MODEL_GENERATION,
    S.MODEL_GENERATING: Phase.MODEL_GENERATION,
    S.MODEL_COMPLETED: Phase.MODEL_GENERATION,
    S.MODEL_FAILED: Phase.MODEL_GENERATION,
    S.COMPLETED: Phase.COMPLETED,
}


class IllegalTransition(Exception):
    def __init__(self, current: Status, target: Status) -> None:
        super().__init__(f"a request cannot go from {current} to {target}")
        self.current = current
        self.target = target


@dataclass(frozen=True, slots=True)
class RequestState:
    """What the state machine needs to know about a request, and what it decides."""

    status: Status
    phase: Phase
    step: str
    progress: float
    progress_estimated: bool
    seq: int
    auto_model: bool = False


def phase_for(current: RequestState, target: Status) -> Phase:
    if target in _PHASE_OF:
        return _PHASE_OF[target]
    if target is S.IMAGE_COMPLETED:
        return Phase.IMAGE_GENERATION if current.auto_model else Phase.AWAITING_SELECTION
    return current.phase  # FAILED and CANCELLED stay in the phase they happened in


def can_transition(current: Status, target: Status) -> bool:
    if current == target:
        return current in _STEPPABLE
    return current in TRANSITIONS[target]


def initial_state(*, auto_model: bool) -> RequestState:
    return RequestState(
        status=S.IMAGE_PENDING,
        phase=Phase.IMAGE_GENERATION,
        step="queued",
        progress=0.0,
        progress_estimated=False,
        seq=1,
        auto_model=auto_model,
    )


def advance(
    current: RequestState,
    target: Status,
    *,
    step: str,
    progress: float | None = None,
    estimated: bool = False,
) -> RequestState:
    """The state after moving to `target`; raises IllegalTransition when it is not allowed.

    Progress never goes backwards: a lower figure keeps the current one. It reaches
    100 only at COMPLETED.
    """
    if not can_transition(current.status, target):
        raise IllegalTransition(current.status, target)
    figure = current.progress if progress is None else max(current.progress, progress)
    figure = 100.0 if target is S.COMPLETED else min(figure, 99.0)
    return replace(
        current,
        status=target,
        phase=phase_for(current, target),
        step=step[:200],
        progress=round(figure, 2),
        progress_estimated=estimated and target is not S.COMPLETED,
        seq=current.seq + 1,
    )
