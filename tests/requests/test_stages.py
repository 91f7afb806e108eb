"""The state machine, without I/O: every legal move allowed, every other one refused."""

from __future__ import annotations

import itertools

import pytest

from app.requests.stages import (
    FINAL,
    TRANSITIONS,
    IllegalTransition,
    Phase,
    RequestState,
    Status,
    advance,
    can_transition,
    initial_state,
)

LEGAL = {
    (Status.IMAGE_PENDING, Status.IMAGE_GENERATING),
    # retryRequest resumes a FAILED request from the step that failed
    (Status.FAILED, Status.IMAGE_PENDING),
    (Status.FAILED, Status.IMAGE_GENERATING),
    (Status.FAILED, Status.MODEL_PENDING),
    (Status.IMAGE_GENERATING, Status.IMAGE_COMPLETED),
    (Status.IMAGE_PENDING, Status.IMAGE_FAILED),
    (Status.IMAGE_GENERATING, Status.IMAGE_FAILED),
    (Status.IMAGE_COMPLETED, Status.MODEL_PENDING),
    (Status.MODEL_PENDING, Status.MODEL_GENERATING),
    (Status.MODEL_GENERATING, Status.MODEL_COMPLETED),
    (Status.MODEL_PENDING, Status.MODEL_FAILED),
    (Status.MODEL_GENERATING, Status.MODEL_FAILED),
    (Status.MODEL_COMPLETED, Status.COMPLETED),
    # progress steps inside a working status
    (Status.IMAGE_PENDING, Status.IMAGE_PENDING),
    (Status.IMAGE_GENERATING, Status.IMAGE_GENERATING),
    (Status.MODEL_PENDING, Status.MODEL_PENDING),
    (Status.MODEL_GENERATING, Status.MODEL_GENERATING),
} | {(s, t) for s in Status if s not in FINAL for t in (Status.FAILED, Status.CANCELLED)}


def state(status: Status, *, progress: float = 10.0, auto_model: bool = False) -> RequestState:
    return RequestState(status, Phase.IMAGE_GENERATION, "", progress, False, 5, auto_model)


def test_there_are_eleven_statuses_and_four_phases() -> None:
    assert len(Status) == 11
    assert len(Phase) == 4
    assert set(TRANSITIONS) == set(Status)


@pytest.mark.parametrize(("current", "target"), sorted(itertools.product(Status, Status)))
def test_only_the_transitions_of_the_table_are_allowed(current: Status, target: Status) -> None:
    legal = (current, target) in LEGAL
    assert can_transition(current, target) is legal
    if legal:
        assert advance(state(current), target, step="x").status is target
    else:
        with pytest.raises(IllegalTransition):
            advance(state(current), target, step="x")


def test_a_final_status_changes_again_only_by_a_retry() -> None:
    retry = {Status.IMAGE_PENDING, Status.IMAGE_GENERATING, Status.MODEL_PENDING}
    for final, target in itertools.product(FINAL, Status):
        if final is Status.FAILED and target in retry:
            continue
        with pytest.raises(IllegalTransition):
            advance(state(final), target, step="x")


def test_every_change_bumps_seq_by_one() -> None:
    start = initial_state(auto_model=False)
    assert start.seq == 1
    moved = advance(start, Status.IMAGE_GENERATING, step="optimizing prompt", progress=2)
    assert moved.seq == 2
    assert advance(moved, Status.IMAGE_GENERATING, step="image 1 ready", progress=20).seq == 3


def test_progress_never_goes_backwards_and_reaches_100_only_when_completed() -> None:
    current = state(Status.MODEL_GENERATING, progress=60)
    lower = advance(current, Status.MODEL_GENERATING, step="poll", progress=40)
    assert lower.progress == 60
    capped = advance(current, Status.MODEL_GENERATING, step="poll", progress=140)
    assert capped.progress == 99
    done = advance(
        advance(current, Status.MODEL_COMPLETED, step="stored"), Status.COMPLETED, step=""
    )
    assert done.progress == 100
    assert done.phase is Phase.COMPLETED


def test_image_completed_awaits_selection_unless_auto_model() -> None:
    manual = advance(state(Status.IMAGE_GENERATING), Status.IMAGE_COMPLETED, step="")
    auto = advance(state(Status.IMAGE_GENERATING, auto_model=True), Status.IMAGE_COMPLETED, step="")
    assert manual.phase is Phase.AWAITING_SELECTION
    assert auto.phase is Phase.IMAGE_GENERATION


def test_failed_and_cancelled_keep_the_phase_they_happened_in() -> None:
    modelling = RequestState(Status.MODEL_GENERATING, Phase.MODEL_GENERATION, "", 60, False, 9)
    assert advance(modelling, Status.CANCELLED, step="").phase is Phase.MODEL_GENERATION
    assert advance(modelling, Status.FAILED, step="").phase is Phase.MODEL_GENERATION


def test_an_estimated_figure_is_flagged_and_completion_is_not() -> None:
    estimated = advance(
        state(Status.MODEL_GENERATING),
        Status.MODEL_GENERATING,
        step="",
        progress=70,
        estimated=True,
    )
    assert estimated.progress_estimated
    completed = advance(
        advance(estimated, Status.MODEL_COMPLETED, step=""), Status.COMPLETED, step=""
    )
    assert not completed.progress_estimated
