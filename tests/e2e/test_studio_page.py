"""The studio's page at GET / as the gateway sends it: our own files under a strict
Content-Security-Policy, no inline script, a token only where `lumi serve` prints one,
and no page at all where the studio is off (production, unless LUMI_STUDIO says so).
(tests/e2e/test_browser_studio.py runs the page in Chromium.)"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.web.assets import WEB
from app.web.studio import STUDIO_ASSETS, studio_config
from tests.conftest import ROOT, Server, start_server, stop_server

pytestmark = pytest.mark.e2e

PRODUCTION = {
    "env": "production",
    "jwt_secret": "s" * 40,
    "production_allow": "dev-secret,sqlite,embedded-broker,embedded-bus,local-storage",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("studio-page"))
    yield server
    stop_server(server)


def test_the_page_loads_only_its_own_files_and_runs_no_inline_script(gateway: Server) -> None:
    page = httpx.get(gateway.url + "/")
    assert page.status_code == 200
    policy = dict(
        part.split(" ", 1) for part in page.headers["content-security-policy"].split("; ")
    )
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["default-src"] == "'none'"
    assert page.headers["cache-control"] == "no-store"  # it holds a development token

    scripts = re.findall(r"<script([^>]*)>", page.text)
    # Each script is a file of this origin, or data no browser runs.
    assert all('src="/assets/' in tag or 'type="application/json"' in tag for tag in scripts)
    assert " style=" not in page.text
    assert not re.search(r"\son[a-z]+=", page.text)  # no inline event handlers
    urls = re.findall(r'(?:src|href)="(/assets/[^"]+)"', page.text)
    assert [url.rsplit("/", 1)[1] for url in urls] == ["studio.css", "glb-viewer.js", "studio.js"]
    for url in urls:
        served = httpx.get(gateway.url + url)
        assert served.status_code == 200, url
        assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    data = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page.text)
    assert data is not None
    assert '"url": "/graphql"' in data.group(1)
    assert '"devToken": "ey' in data.group(1)


def test_a_token_is_in_the_page_only_where_lumi_serve_prints_one() -> None:
    assert str(
        studio_config(Settings(env="development", auth_mode="hs256"))["devToken"]
    ).startswith("ey")
    for settings in (
        Settings(env="production", auth_mode="hs256", jwt_secret="s" * 40),
        Settings(env="development", auth_mode="jwks", jwks_url="https://id.example/jwks"),
    ):
        assert studio_config(settings)["devToken"] is None


async def test_the_studio_is_off_in_production_unless_turned_on() -> None:
    assert Settings(env="development").studio_enabled
    assert not Settings(env="production").studio_enabled
    assert Settings(env="production", studio=True).studio_enabled
    assert not Settings(env="development", studio=False).studio_enabled

    # No lifespan (no database) is needed to see that there is no page, nor its files.
    script = "/assets/0000000000000000/lumi/studio.js"
    async with client(Settings(**PRODUCTION)) as off:  # type: ignore[arg-type]
        assert (await off.get("/")).status_code == 404
        assert (await off.get(script)).status_code == 404
    async with client(Settings(**PRODUCTION, studio=True)) as on:  # type: ignore[arg-type]
        assert (await on.get(script)).status_code == 200


def client(settings: Settings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://studio.test")


def test_lumi_studio_false_turns_it_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start_server(tmp_path_factory.mktemp("studio-off"), LUMI_STUDIO="false")
    try:
        assert httpx.get(server.url + "/").status_code == 404
        assert httpx.get(server.graphql, headers={"Accept": "text/html"}).status_code == 200
    finally:
        stop_server(server)


def test_an_installed_wheel_carries_every_file_the_page_loads() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = set(pyproject["tool"]["setuptools"]["package-data"]["app.web"])
    for name in ["templates/studio.html"] + [
        asset.path.relative_to(WEB).as_posix() for asset in STUDIO_ASSETS
    ]:
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in shipped), name
