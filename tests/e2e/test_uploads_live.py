"""A user's own image to 3D, against a live `lumi serve` (README: "Your own image to 3D"):
the GraphQL multipart request, presigned uploads to the gateway and to S3 (moto_server),
and Hunyuan 3D (its fake) receiving the uploaded image."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from PIL import Image

from tests.conftest import Server, start_server, stop_server, token_for
from tests.e2e.client import REQUEST_UPDATES, collect, data_of, error_code, graphql, ws_session
from tests.fakes.hunyuan import start_fake_hunyuan

pytestmark = pytest.mark.e2e

UPLOAD = """mutation Up($file: Upload!) {
  uploadImage(file: $file) { id status contentType width height size filename url }
}"""
OPEN = """mutation Open($input: CreateImageUploadInput!) {
  createImageUpload(input: $input) { url fields expiresAt maxBytes upload { id status } }
}"""
COMPLETE = """mutation Done($id: ID!) {
  completeImageUpload(id: $id) { id status contentType width height url }
}"""
CREATE = """mutation Create($input: CreateRequestInput!) {
  createRequest(input: $input) { id status phase prompt imageCount seq }
}"""
RESULT = """query R($id: ID!) { request(id: $id) {
  status phase prompt images { id status provider url width height }
  model { name provider sourceImage { id url } }
} }"""
CREDITS = "{ me { credits ledger(first: 20) { edges { node { reason amount requestId } } } } }"
NODE = "query N($id: ID!) { node(id: $id) { id } }"


def jpeg_turned_sideways() -> bytes:
    """A 64x32 JPEG, left half red, whose EXIF says to turn it a quarter clockwise, with
    a GPS position and a camera name that must not survive."""
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "SecretCam"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def png(width: int = 48, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 160, 90)).save(buffer, "PNG")
    return buffer.getvalue()


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


async def multipart_upload(
    server: Server, user: str, name: str, data: bytes, content_type: str
) -> dict[str, Any]:
    """`uploadImage` as the GraphQL multipart request specification sends it: the
    `operations` part, the `map` part, then the file part."""
    operations = {"query": UPLOAD, "variables": {"file": None}}
    parts = {"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.file"]})}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            server.graphql,
            data=parts,
            files={"0": (name, data, content_type)},
            headers=auth(user),
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def follow_to_the_end(server: Server, user: str, request_id: str) -> list[dict[str, Any]]:
    async with ws_session(server, user) as session:
        return await collect(session, REQUEST_UPDATES, {"id": request_id, "afterSeq": 0})


async def fetch(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url)
    assert response.status_code == 200, url
    return response.content


def stored_files(server: Server, folder: str) -> set[str]:
    root = server.log.parent / "files" / folder
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


async def post_form(form: dict[str, Any], name: str, data: bytes, content_type: str) -> int:
    """The presigned form as a browser sends it: its fields, then the file, last."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            form["url"], data=form["fields"], files={"file": (name, data, content_type)}
        )
    return response.status_code


async def test_an_uploaded_image_becomes_a_model_paying_for_the_model_only(
    server: Server,
) -> None:
    user = f"uploader-{uuid.uuid4().hex[:8]}"
    before = (await data_of(server, CREDITS, user=user))["me"]["credits"]
    body = await multipart_upload(
        server, user, "red chair.jpg", jpeg_turned_sideways(), "image/jpeg"
    )
    assert "errors" not in body, body
    upload = body["data"]["uploadImage"]
    assert upload["status"] == "READY"
    assert (upload["contentType"], upload["width"], upload["height"]) == ("image/jpeg", 32, 64)
    assert upload["filename"] == "red chair.jpg"
    clean = await fetch(upload["url"])
    assert b"SecretCam" not in clean  # stored without its EXIF

    created = (await data_of(server, CREATE, {"input": {"sourceImage": upload["id"]}}, user=user))[
        "createRequest"
    ]
    assert (created["status"], created["phase"], created["imageCount"]) == (
        "MODEL_PENDING",
        "MODEL_GENERATION",
        1,
    )
    events = await follow_to_the_end(server, user, created["id"])
    statuses = [event["status"] for event in events]
    assert statuses[0] == "MODEL_PENDING"
    assert statuses[-1] == "COMPLETED"
    assert not [s for s in statuses if s.startswith("IMAGE_")]  # no image phase at all
    assert events[0]["message"] == "request received with your image"

    result = (await data_of(server, RESULT, {"id": created["id"]}, user=user))["request"]
    [image] = result["images"]
    assert (image["status"], image["provider"], image["width"], image["height"]) == (
        "COMPLETED",
        "upload",
        32,
        64,
    )
    model = result["model"]
    assert model["name"] == "red chair"  # named after the file
    assert model["sourceImage"]["id"] == image["id"]
    assert await fetch(model["sourceImage"]["url"]) == clean  # the very image uploaded

    after = (await data_of(server, CREDITS, user=user))["me"]
    assert before - after["credits"] == 5  # LUMI_MODEL_CREDIT_COST: no image was made
    spent = [
        edge["node"]["reason"]
        for edge in after["ledger"]["edges"]
        if edge["node"]["amount"] < 0 and edge["node"]["requestId"] == created["id"]
    ]
    assert spent == ["MODEL"]

    # used once: the same upload cannot make a second request
    again = await graphql(server, CREATE, {"input": {"sourceImage": upload["id"]}}, user=user)
    assert error_code(again) == "NOT_FOUND"


async def test_a_repeated_create_with_its_idempotency_key_answers_the_same_request(
    server: Server,
) -> None:
    """The upload is used up by the first call; the repeat (a lost answer, retried) gets
    that request back, not NOT_FOUND, and pays nothing more."""
    user = f"repeat-{uuid.uuid4().hex[:8]}"
    upload = (await multipart_upload(server, user, "a.png", png(), "image/png"))["data"][
        "uploadImage"
    ]
    variables = {
        "input": {"sourceImage": upload["id"], "prompt": "a green tile", "idempotencyKey": "k1"}
    }
    first = (await data_of(server, CREATE, variables, user=user))["createRequest"]
    credits = (await data_of(server, CREDITS, user=user))["me"]["credits"]
    again = (await data_of(server, CREATE, variables, user=user))["createRequest"]
    assert again["id"] == first["id"]
    assert first["prompt"] == "a green tile"
    assert (await data_of(server, CREDITS, user=user))["me"]["credits"] == credits
    other = {"input": {**variables["input"], "prompt": "something else"}}
    assert error_code(await graphql(server, CREATE, other, user=user)) == "CONFLICT"


@pytest.mark.parametrize(
    ("name", "data", "content_type", "reason"),
    [
        ("notes.png", b"this is not an image, whatever its name\n" * 20, "image/png", "not a PNG"),
        ("half.png", png(200, 200)[:300], "image/png", "truncated or damaged"),
        ("anim.gif", b"GIF89a" + b"\x00" * 64, "image/gif", "not a PNG"),
    ],
)
async def test_a_bad_multipart_upload_is_refused_and_nothing_is_kept(
    server: Server, name: str, data: bytes, content_type: str, reason: str
) -> None:
    user = f"bad-{uuid.uuid4().hex[:8]}"
    files_before = stored_files(server, "uploads")
    body = await multipart_upload(server, user, name, data, content_type)
    assert error_code(body) == "BAD_USER_INPUT"
    assert reason in body["errors"][0]["message"]
    assert body["data"] is None
    assert stored_files(server, "uploads") == files_before


async def test_a_multipart_request_needs_a_header_no_other_site_can_send(
    server: Server,
) -> None:
    """A form POST needs no CORS preflight: without a header that does (Authorization,
    Apollo-Require-Preflight), any page could make a visitor's browser send one."""
    operations = {"query": UPLOAD, "variables": {"file": None}}
    parts = {"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.file"]})}
    files = {"0": ("x.png", png(), "image/png")}
    async with httpx.AsyncClient(timeout=30) as client:
        bare = await client.post(server.graphql, data=parts, files=files)
        flagged = await client.post(
            server.graphql, data=parts, files=files, headers={"Apollo-Require-Preflight": "1"}
        )
    assert bare.status_code == 400
    assert "Authorization" in bare.json()["errors"][0]["message"]
    assert error_code(flagged.json()) == "UNAUTHENTICATED"  # let through, to be refused later


async def test_a_multipart_upload_may_be_larger_than_a_json_body(server: Server) -> None:
    """JSON bodies stop at LUMI_MAX_BODY_BYTES (1 MB); an image may be larger."""
    noise = Image.effect_noise((900, 900), 120).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    assert len(buffer.getvalue()) > 1_200_000
    user = f"large-{uuid.uuid4().hex[:8]}"
    body = await multipart_upload(server, user, "noise.png", buffer.getvalue(), "image/png")
    assert "errors" not in body, body
    assert (body["data"]["uploadImage"]["width"], body["data"]["uploadImage"]["height"]) == (
        900,
        900,
    )


async def test_a_multipart_body_over_the_upload_limit_is_refused_while_it_streams(
    server: Server,
) -> None:
    """Past LUMI_UPLOAD_MAX_BYTES (and the form's framing) a streamed body (no length
    announced) is refused: 413, before it is parsed."""
    operations = json.dumps({"query": UPLOAD, "variables": {"file": None}})
    boundary = "lumi-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
        f'{operations}\r\n--{boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n'
        f'{{"0": ["variables.file"]}}\r\n--{boundary}\r\nContent-Disposition: form-data; '
        f'name="0"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    sent = 0

    async def streamed() -> Any:
        nonlocal sent
        yield head
        chunk = b"\0" * 1_000_000
        while sent < 30_000_000:  # 10 MB past the limit
            sent += len(chunk)
            yield chunk

    headers = {**auth("streamer"), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(server.graphql, content=streamed(), headers=headers)
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_presigned_upload_to_the_gateway_goes_straight_to_3d(server: Server) -> None:
    user = f"presigned-{uuid.uuid4().hex[:8]}"
    form = (
        await data_of(
            server, OPEN, {"input": {"contentType": "image/png", "filename": "cube.png"}}, user=user
        )
    )["createImageUpload"]
    assert form["url"].endswith("/uploads")
    assert form["upload"]["status"] == "PENDING"
    assert await post_form(form, "cube.png", png(), "image/png") == 204
    incoming = stored_files(server, "incoming")
    assert incoming  # in quarantine, unread

    created = (
        await data_of(server, CREATE, {"input": {"sourceImage": form["upload"]["id"]}}, user=user)
    )["createRequest"]
    assert created["prompt"] == "cube"
    events = await follow_to_the_end(server, user, created["id"])
    assert events[-1]["status"] == "COMPLETED"
    result = (await data_of(server, RESULT, {"id": created["id"]}, user=user))["request"]
    assert result["model"]["sourceImage"]["id"] == result["images"][0]["id"]
    assert not incoming & stored_files(server, "incoming")  # the raw file went


async def test_a_bad_presigned_upload_is_refused_and_nothing_is_kept(server: Server) -> None:
    user = f"presigned-bad-{uuid.uuid4().hex[:8]}"
    form = (await data_of(server, OPEN, {"input": {"contentType": "image/png"}}, user=user))[
        "createImageUpload"
    ]
    key = form["fields"]["key"]
    raw = server.log.parent / "files" / key
    assert (
        await post_form(form, "x.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png")
        == 204
    )
    assert raw.is_file()
    body = await graphql(server, COMPLETE, {"id": form["upload"]["id"]}, user=user)
    assert error_code(body) == "BAD_USER_INPUT"
    assert "not a PNG, JPEG or WebP" in body["errors"][0]["message"]
    assert not raw.exists()  # the raw file is gone
    gone = await graphql(server, NODE, {"id": form["upload"]["id"]}, user=user)
    assert error_code(gone) == "NOT_FOUND"  # and so is the upload


async def test_the_gateways_upload_form_takes_only_what_it_was_signed_for(server: Server) -> None:
    user = f"forger-{uuid.uuid4().hex[:8]}"
    form = (await data_of(server, OPEN, {"input": {"contentType": "image/png"}}, user=user))[
        "createImageUpload"
    ]
    elsewhere = {**form, "fields": {**form["fields"], "key": "models/someone-elses.glb"}}
    assert await post_form(elsewhere, "x.png", png(), "image/png") == 403
    bigger = {**form, "fields": {**form["fields"], "x-lumi-max-bytes": "999999999"}}
    assert await post_form(bigger, "x.png", png(), "image/png") == 403
    assert not (server.log.parent / "files" / "models" / "someone-elses.glb").exists()


async def test_another_users_upload_is_not_found(server: Server) -> None:
    owner, other = f"owner-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    body = await multipart_upload(server, owner, "mine.png", png(), "image/png")
    upload_id = body["data"]["uploadImage"]["id"]
    for query, variables in (
        (CREATE, {"input": {"sourceImage": upload_id}}),
        (COMPLETE, {"id": upload_id}),
        (NODE, {"id": upload_id}),
    ):
        assert error_code(await graphql(server, query, variables, user=other)) == "NOT_FOUND"
    # still the owner's to use
    assert (await data_of(server, NODE, {"id": upload_id}, user=owner))["node"]["id"] == upload_id


@pytest.fixture(scope="module")
def s3_server(
    moto_s3: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The gateway on S3 (moto_server), on SQLite, so a test can read its rows."""
    running = start_server(tmp_path_factory.mktemp("uploads-s3"), name="s3", **moto_s3)
    yield running
    stop_server(running)


def bucket_keys(settings: dict[str, str], prefix: str) -> set[str]:
    s3 = boto3.client(
        "s3",
        endpoint_url=settings["LUMI_S3_ENDPOINT_URL"],
        region_name=settings["LUMI_S3_REGION"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    listed = s3.list_objects_v2(Bucket=settings["LUMI_S3_BUCKET"], Prefix=prefix)
    return {str(item["Key"]) for item in listed.get("Contents", [])}


def upload_rows(server: Server) -> int:
    with sqlite3.connect(server.log.parent / "lumi.db") as connection:
        return int(connection.execute("SELECT count(*) FROM uploaded_images").fetchone()[0])


async def test_a_presigned_upload_to_s3_is_checked_and_turned_into_a_model(
    s3_server: Server, moto_s3: dict[str, str]
) -> None:
    user = f"s3-{uuid.uuid4().hex[:8]}"
    form = (await data_of(s3_server, OPEN, {"input": {"contentType": "image/jpeg"}}, user=user))[
        "createImageUpload"
    ]
    assert form["url"].startswith(moto_s3["LUMI_S3_ENDPOINT_URL"])
    assert "policy" in form["fields"]
    assert await post_form(form, "photo.jpg", jpeg_turned_sideways(), "image/jpeg") == 204
    assert form["fields"]["key"] in bucket_keys(moto_s3, "incoming/")

    done = (await data_of(s3_server, COMPLETE, {"id": form["upload"]["id"]}, user=user))[
        "completeImageUpload"
    ]
    assert (done["status"], done["width"], done["height"]) == ("READY", 32, 64)
    assert form["fields"]["key"] not in bucket_keys(moto_s3, "incoming/")

    created = (await data_of(s3_server, CREATE, {"input": {"sourceImage": done["id"]}}, user=user))[
        "createRequest"
    ]
    events = await follow_to_the_end(s3_server, user, created["id"])
    assert events[-1]["status"] == "COMPLETED"
    result = (await data_of(s3_server, RESULT, {"id": created["id"]}, user=user))["request"]
    assert await fetch(result["model"]["sourceImage"]["url"]) == await fetch(done["url"])


async def test_a_bad_presigned_upload_to_s3_leaves_nothing(
    s3_server: Server, moto_s3: dict[str, str]
) -> None:
    user = f"s3-bad-{uuid.uuid4().hex[:8]}"
    rows_before = upload_rows(s3_server)
    form = (await data_of(s3_server, OPEN, {"input": {"contentType": "image/png"}}, user=user))[
        "createImageUpload"
    ]
    assert await post_form(form, "x.png", png(300, 300)[:200], "image/png") == 204
    body = await graphql(
        s3_server, CREATE, {"input": {"sourceImage": form["upload"]["id"]}}, user=user
    )
    assert error_code(body) == "BAD_USER_INPUT"
    assert "truncated or damaged" in body["errors"][0]["message"]
    assert form["fields"]["key"] not in bucket_keys(moto_s3, "incoming/")
    assert upload_rows(s3_server) == rows_before  # no upload row, and no request either
    listed = await data_of(s3_server, "{ requests { edges { node { id } } } }", user=user)
    assert listed["requests"]["edges"] == []


HUNYUAN_ID = "AKIDfakeLumiUploads01"
HUNYUAN_KEY = "fake-hunyuan-secret-key-uploads"


@pytest.fixture(scope="module")
def hunyuan_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    folder = tmp_path_factory.mktemp("uploads-hunyuan")
    url, stop = start_fake_hunyuan(
        HUNYUAN_ID, HUNYUAN_KEY, run_seconds=0.3, log=folder / "hunyuan.log"
    )
    try:
        running = start_server(
            folder,
            name="hunyuan-gateway",
            LUMI_MODEL_PROVIDERS="hunyuan",
            LUMI_HUNYUAN_ENDPOINT=url,
            LUMI_HUNYUAN_SECRET_ID=HUNYUAN_ID,
            LUMI_HUNYUAN_SECRET_KEY=HUNYUAN_KEY,
            LUMI_HUNYUAN_TYPICAL_SECONDS="1",
        )
        try:
            yield running, url
        finally:
            stop_server(running)
    finally:
        stop()


async def test_hunyuan_is_sent_the_uploaded_image(hunyuan_server: tuple[Server, str]) -> None:
    server, vendor = hunyuan_server
    user = f"hunyuan-{uuid.uuid4().hex[:8]}"
    body = await multipart_upload(server, user, "statue.webp", _webp(), "image/webp")
    upload = body["data"]["uploadImage"]
    clean = await fetch(upload["url"])
    created = (await data_of(server, CREATE, {"input": {"sourceImage": upload["id"]}}, user=user))[
        "createRequest"
    ]
    events = await follow_to_the_end(server, user, created["id"])
    assert events[-1]["status"] == "COMPLETED", events[-1]
    async with httpx.AsyncClient(timeout=10) as client:
        calls = (await client.get(f"{vendor}/_fake/calls")).json()["calls"]
    submitted = [c for c in calls if c["action"] == "SubmitHunyuanTo3DProJob"]
    assert [c["image_sha256"] for c in submitted] == [hashlib.sha256(clean).hexdigest()]
    result = (await data_of(server, RESULT, {"id": created["id"]}, user=user))["request"]
    assert result["model"]["provider"] == "hunyuan"


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 180, 40)).save(buffer, "WEBP")
    return buffer.getvalue()


def test_the_sqlite_file_is_where_the_tests_look(tmp_path: Path) -> None:
    """`upload_rows` reads the gateway's SQLite file: it must be the default one."""
    from app.config import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.resolved_database_url.endswith(str(tmp_path / "lumi.db"))
