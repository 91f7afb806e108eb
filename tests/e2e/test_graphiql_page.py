"""GraphiQL's page as the gateway sends it: every file from the gateway itself under a
strict Content-Security-Policy, only the listed files served, a page that says how to
install its files when they are missing, and a token only where `lumi serve` prints one.
(tests/e2e/test_browser_graphiql.py runs the page in Chromium.)"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator

import httpx
import pytest
from starlette.requests import Request

from app.config import Settings
from app.graphql.ide import GRAPHIQL_ASSETS, graphiql_config, graphiql_page
from app.web.assets import NODE_MODULES, WEB, Asset
from tests.conftest import ROOT, Server, start_server, stop_server

pytestmark = pytest.mark.e2e

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("graphiql-page"))
    yield server
    stop_server(server)


def test_the_page_loads_only_the_gateways_own_files_and_runs_no_inline_script(
    gateway: Server,
) -> None:
    page = httpx.get(gateway.graphql, headers=HTML)
    assert page.status_code == 200
    policy = dict(
        part.split(" ", 1) for part in page.headers["content-security-policy"].split("; ")
    )
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'none'"
    assert page.headers["cache-control"] == "no-store"  # it holds a development token

    scripts = re.findall(r"<script([^>]*)>", page.text)
    # Each script is a file of this origin, or data no browser runs.
    assert all('src="/assets/' in tag or 'type="application/json"' in tag for tag in scripts)
    urls = re.findall(r'(?:src|href)="(/assets/[^"]+)"', page.text)
    assert len(urls) == len(GRAPHIQL_ASSETS)
    for url in urls:
        served = httpx.get(gateway.url + url)
        assert served.status_code == 200, url
        assert served.headers["content-type"].split(";")[0] in {"text/javascript", "text/css"}
        assert served.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_only_listed_files_are_served(gateway: Server) -> None:
    listed = re.search(
        r'src="(/assets/[0-9a-f]+/)graphiql/graphiql\.min\.js"',
        httpx.get(gateway.graphql, headers=HTML).text,
    )
    assert listed is not None
    prefix = listed.group(1)
    for name in (
        "graphiql/package.json",  # installed, but not a file a page loads
        "..%2F..%2Fassets.py",
        "react/index.js",
    ):
        refused = httpx.get(f"{gateway.url}{prefix}{name}")
        assert refused.status_code == 404, name
    # A page loaded before a reinstall still gets its file, but not for keeps.
    stale = httpx.get(f"{gateway.url}/assets/0000000000000000/graphiql/graphiql.min.js")
    assert stale.status_code == 200
    assert stale.headers["cache-control"] == "no-cache"


async def test_without_its_files_the_page_says_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Asset, "exists", lambda asset: not asset.path.is_relative_to(NODE_MODULES))
    scope = {"type": "http", "method": "GET", "path": "/graphql", "headers": [], "root_path": ""}
    response = await graphiql_page(Request(scope), Settings())
    assert response.status_code == 503
    text = bytes(response.body).decode()
    assert "npm ci --prefix app/web" in text
    assert "graphiql/graphiql.min.js" in text
    assert "<script" not in text


def test_a_token_is_in_the_page_only_where_lumi_serve_prints_one() -> None:
    development = graphiql_config(Settings(env="development", auth_mode="hs256"))
    assert str(development["headers"]).count("Bearer ey") == 1
    for settings in (
        Settings(env="production", auth_mode="hs256", jwt_secret="s" * 40),
        Settings(env="development", auth_mode="jwks", jwks_url="https://id.example/jwks"),
    ):
        config = graphiql_config(settings)
        assert config["headers"] == ""
        assert "Bearer ey" not in str(config["tabs"])


def test_an_installed_wheel_carries_every_file_the_page_loads() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = set(pyproject["tool"]["setuptools"]["package-data"]["app.web"])
    for asset in GRAPHIQL_ASSETS:
        name = asset.path.relative_to(WEB).as_posix()
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in shipped), name
