"""Display names are public and token subjects are not: a user whose token has no `name`
claim gets a neutral name, never the subject (often an e-mail address), and anyone may
rename themselves with `updateMe`."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest

from app.auth import TokenVerifier, Viewer
from app.bus import InProcessBus
from app.deps import Deps, build_deps
from app.graphql.relay import global_id, row_id
from app.migrate import upgrade_async
from app.users.service import default_display_name
from tests.conftest import RecordingQueue, make_settings
from tests.fakes.identity import start_fake_identity
from tests.graphql.client import code, data, execute
from tests.models.test_library import make_model

SUBJECT = "ada.lovelace@example.com"
ME = "{ me { id displayName } }"
GALLERY = "{ publicModels(first: 50) { edges { node { id owner { id displayName } } } } }"
UPDATE_ME = "mutation U($input: UpdateMeInput!) { updateMe(input: $input) { id displayName } }"


def nameless_token(deps: Deps, subject: str) -> str:
    """A token with a subject and no `name` claim, as many identity providers issue."""
    settings = deps.settings
    claims = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "exp": int(time.time()) + 600,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def named_token(deps: Deps, subject: str, name: str) -> str:
    return TokenVerifier.from_settings(deps.settings).mint(subject, name=name)


async def me(deps: Deps, token: str) -> dict[str, Any]:
    return dict((await data(deps, ME, token=token))["me"])


async def update_me(deps: Deps, token: str | None, name: str) -> dict[str, Any]:
    return await execute(deps, UPDATE_ME, {"input": {"displayName": name}}, token=token)


async def a_public_model_of(deps: Deps, token: str) -> str:
    """The row id of the token's user, who now has a model in the gallery."""
    viewer = await me(deps, token)
    owner = Viewer(id=row_id(viewer["id"]), external_id="", display_name="", role="user")
    await make_model(deps, owner, public=True)
    return owner.id


async def gallery_owner(deps: Deps, owner_id: str) -> str:
    """The owner's name as an anonymous visitor sees it in the gallery."""
    edges = (await data(deps, GALLERY))["publicModels"]["edges"]
    [name] = {
        e["node"]["owner"]["displayName"]
        for e in edges
        if e["node"]["owner"]["id"] == global_id("PublicProfile", owner_id)
    }
    return str(name)


async def test_a_token_without_a_name_shows_a_neutral_name_never_its_subject(
    deps: Deps,
) -> None:
    token = nameless_token(deps, SUBJECT)
    owner_id = await a_public_model_of(deps, token)
    gallery = json.dumps(await execute(deps, GALLERY))  # anonymous
    for part in ("lovelace", "example", "@"):
        assert part not in gallery.lower()
    name = await gallery_owner(deps, owner_id)
    assert (await me(deps, token))["displayName"] == name
    assert (await me(deps, nameless_token(deps, SUBJECT)))["displayName"] == name  # stable
    other = await me(deps, nameless_token(deps, "grace.hopper@example.com"))
    assert other["displayName"] != name


async def test_update_me_renames_the_viewer_in_the_gallery_at_once(deps: Deps) -> None:
    token = named_token(deps, SUBJECT, "Ada")
    owner_id = await a_public_model_of(deps, token)
    assert await gallery_owner(deps, owner_id) == "Ada"  # the token's name claim is kept

    renamed = await update_me(deps, token, "  Countess   of Code ")
    assert renamed == {
        "data": {"updateMe": {"id": global_id("Me", owner_id), "displayName": "Countess of Code"}},
        "errors": [],
    }
    assert await gallery_owner(deps, owner_id) == "Countess of Code"
    assert (await me(deps, token))["displayName"] == "Countess of Code"
    # A later token's name claim does not undo it: the name is the user's own now.
    assert (await me(deps, named_token(deps, SUBJECT, "Ada")))["displayName"] == (
        "Countess of Code"
    )


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("A", "A"),
        ("x" * 100, "x" * 100),
        ("  " + "y" * 100 + "\t", "y" * 100),
        ("Zoë 🦊", "Zoë 🦊"),
        ("李小龍", "李小龍"),
    ],
    ids=["one", "hundred", "trimmed-to-hundred", "emoji", "han"],
)
async def test_update_me_takes_1_to_100_characters_of_any_script(
    deps: Deps, given: str, shown: str
) -> None:
    token = nameless_token(deps, SUBJECT)
    result = await update_me(deps, token, given)
    assert not result["errors"], result
    assert result["data"]["updateMe"]["displayName"] == shown
    assert (await me(deps, token))["displayName"] == shown


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        (" \t\n ", "must not be empty"),
        ("x" * 101, "at most 100 characters"),
        ("nul\x00byte", "without control characters"),
        ("bell\x07", "without control characters"),
    ],
    ids=["empty", "blank", "too-long", "nul", "control"],
)
async def test_update_me_refuses_a_bad_name_and_changes_nothing(
    deps: Deps, name: str, message: str
) -> None:
    token = named_token(deps, SUBJECT, "Ada")
    before = await me(deps, token)
    result = await update_me(deps, token, name)
    assert code(result) == "BAD_USER_INPUT"
    [error] = result["errors"]
    assert message in error["message"]
    assert error["extensions"]["field"] == "displayName"
    assert result["data"] is None
    assert await me(deps, token) == before


@pytest.mark.parametrize(
    "name", [" \t ", "nul\x00", "lone \ud800 surrogate"], ids=["blank", "nul", "lone-surrogate"]
)
async def test_a_token_whose_name_is_no_valid_name_gives_a_neutral_name(
    deps: Deps, name: str
) -> None:
    viewer = await me(deps, named_token(deps, SUBJECT, name))
    assert viewer["displayName"] == default_display_name(row_id(viewer["id"]))


async def test_an_anonymous_update_me_is_unauthenticated(deps: Deps) -> None:
    assert code(await update_me(deps, None, "Nobody")) == "UNAUTHENTICATED"


async def test_a_rename_shows_at_once_while_the_user_service_answer_is_cached(
    tmp_path: Path,
) -> None:
    """The auth cache keeps who a token is, never what the user is called. SQLite only:
    this is about the cache, not the database."""
    identity = start_fake_identity(log=tmp_path / "users.log")
    settings = make_settings(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'lumi.db'}",
        auth_mode="user-service",
        user_service_url=identity.url,
    )
    await upgrade_async(settings.resolved_database_url)
    deps = build_deps(settings, bus=InProcessBus(), queue=RecordingQueue())
    try:
        token = f"opaque-{uuid.uuid4().hex}"
        await identity.add_user(token, {"id": SUBJECT, "name": "Ada"})
        assert (await me(deps, token))["displayName"] == "Ada"
        assert not (await update_me(deps, token, "Countess of Code"))["errors"]
        assert (await me(deps, token))["displayName"] == "Countess of Code"
        assert len(await identity.calls("/me")) == 1  # every later answer came from the cache
    finally:
        await deps.aclose()
        identity.stop()
