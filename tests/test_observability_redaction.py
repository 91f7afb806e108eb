"""Secrets never reach a log line, whatever their shape."""

from __future__ import annotations

from app.observability import redact, register_secrets


def test_configured_secrets_and_known_shapes_are_redacted() -> None:
    register_secrets(["tencent-secret-key-0123", "short"])
    line = (
        "hunyuan answered: bad key tencent-secret-key-0123; "
        "Authorization: Bearer abc.def; api_key=sk-live-123456789 sk-abcdefghijkl "
        "TC3-HMAC-SHA256 Credential=AKID/2026-11-23/ai3d/tc3_request, Signature=deadbeef"
    )
    cleaned = redact(line)
    for secret in ("tencent-secret-key-0123", "abc.def", "sk-live-123456789", "sk-abcdefghijkl"):
        assert secret not in cleaned
    assert "deadbeef" not in cleaned
    assert "short" in redact("a short word")  # too short to be a secret worth blanking
