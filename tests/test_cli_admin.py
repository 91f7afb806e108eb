"""`lumi queue` and `lumi user` as an operator types them, against the embedded default."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import run_lumi, start_server, stop_server


def test_queue_commands_answer_on_a_fresh_installation(tmp_path: Path) -> None:
    status = run_lumi(tmp_path / "fresh", "queue", "status")
    assert status.returncode == 0, status.stderr
    assert "dead letters" in status.stdout
    assert "embedded broker" in status.stdout
    dead = run_lumi(tmp_path / "fresh", "queue", "dead")
    assert dead.returncode == 0
    assert "0 dead letter(s)" in dead.stdout


def test_purge_asks_for_confirmation_and_names_the_queues(tmp_path: Path) -> None:
    assert run_lumi(tmp_path, "migrate").returncode == 0
    unconfirmed = run_lumi(tmp_path, "queue", "purge", "dead")  # no terminal to ask on
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr
    confirmed = run_lumi(tmp_path, "queue", "purge", "dead", "--yes")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "purged 0 dead letter(s)" in confirmed.stdout
    unknown = run_lumi(tmp_path, "queue", "purge", "urgent", "--yes")
    assert unknown.returncode == 2
    assert "high, default, low" in unknown.stderr
    nothing = run_lumi(tmp_path, "queue", "requeue")
    assert nothing.returncode == 2
    assert "--all" in nothing.stderr


def test_an_operator_grants_credits_and_a_role(tmp_path: Path) -> None:
    from tests.conftest import token_for

    server = start_server(tmp_path)
    try:
        me = "{ me { role credits ledger(first: 1) { edges { node { kind reason amount } } } } }"
        headers = {"Authorization": f"Bearer {token_for('carol')}"}
        before = httpx.post(server.graphql, json={"query": me}, headers=headers).json()
        assert before["data"]["me"]["role"] == "user"
        granted = run_lumi(tmp_path, "user", "credits", "carol", "25")
        assert granted.returncode == 0, granted.stderr
        assert run_lumi(tmp_path, "user", "role", "carol", "priority").returncode == 0
        after = httpx.post(server.graphql, json={"query": me}, headers=headers).json()
        assert after["data"]["me"]["credits"] == before["data"]["me"]["credits"] + 25
        assert after["data"]["me"]["ledger"]["edges"][0]["node"] == {
            "kind": "GRANT",
            "reason": "ADJUSTMENT",
            "amount": 25,
        }
        high = httpx.post(
            server.graphql,
            json={
                "query": 'mutation { createRequest(input: {prompt: "a vase", priority: HIGH}) '
                "{ priority } }"
            },
            headers=headers,
        ).json()
        assert high == {"data": {"createRequest": {"priority": "HIGH"}}}
        overdraw = run_lumi(tmp_path, "user", "credits", "carol", "-100000")
        assert overdraw.returncode == 2
        assert "below zero" in overdraw.stderr
        unknown = run_lumi(tmp_path, "user", "credits", "nobody", "5")
        assert unknown.returncode == 1
    finally:
        stop_server(server)
