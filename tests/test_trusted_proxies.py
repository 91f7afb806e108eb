"""LUMI_TRUSTED_PROXIES: addresses and networks uvicorn can match, or the start fails.

Uvicorn keeps an entry it cannot parse as a literal that no client address ever equals,
so a typo would quietly trust nobody (or, for '*' among others, not everybody)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from app.config import Settings


def settings(trusted_proxies: str) -> Settings:
    return Settings(_env_file=None, trusted_proxies=trusted_proxies)


def test_no_proxy_is_trusted_by_default() -> None:
    assert Settings(_env_file=None).trusted_proxy_list == []


def test_addresses_and_networks_of_both_families_are_listed_as_given() -> None:
    listed = settings(" 10.244.0.0/16, 192.0.2.7 ,, fd00::/8,::1").trusted_proxy_list
    assert listed == ["10.244.0.0/16", "192.0.2.7", "fd00::/8", "::1"]


def test_a_lone_star_trusts_every_peer() -> None:
    assert settings("*").trusted_proxy_list == ["*"]


@pytest.mark.parametrize(
    "value",
    ["ingress-nginx", "10.244.1.0/16", "300.1.1.1", "10.0.0.0/33", "*, 10.0.0.1"],
    ids=["a name", "host bits set", "no address", "no prefix", "star among others"],
)
def test_an_entry_uvicorn_could_never_match_stops_the_start(value: str) -> None:
    with pytest.raises(ValidationError, match="LUMI_TRUSTED_PROXIES"):
        settings(value)


def test_the_kubernetes_config_trusts_the_ingress_network_and_compose_trusts_no_one() -> None:
    deploy = Path(__file__).resolve().parent.parent / "deploy"
    config_map = yaml.safe_load((deploy / "k8s" / "configmap.yaml").read_text())
    compose = yaml.safe_load((deploy / "compose.yaml").read_text())
    in_kubernetes = config_map["data"]["LUMI_TRUSTED_PROXIES"]
    in_compose = compose["x-lumi"]["environment"]["LUMI_TRUSTED_PROXIES"]
    assert settings(in_kubernetes).trusted_proxy_list == ["10.244.0.0/16"]
    assert settings(in_compose).trusted_proxy_list == []
