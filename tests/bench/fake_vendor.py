"""The fake Tencent Hunyuan 3D of `tests/fakes/hunyuan.py`, served for a benchmark: every
job takes exactly `--run-seconds` (no queueing time) and the account has no job limit
(the fake's default of 3 running jobs is Hunyuan Pro's; here the vendor must not be the
bottleneck). Signatures are verified as in the tests. `--max-rate R` enforces Tencent's
request-rate quota: at most R requests per second per API action (documented: 20),
beyond which the fake answers `RequestLimitExceeded`.

    python -m tests.bench.fake_vendor --port P --secret-id ID --secret-key KEY --run-seconds S
        [--max-rate R]
"""

from __future__ import annotations

import argparse


def main() -> None:
    import uvicorn

    from tests.fakes.hunyuan import create_fake_app

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-id", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--run-seconds", type=float, required=True)
    parser.add_argument("--max-rate", type=float, default=None)
    args = parser.parse_args()
    app = create_fake_app(
        secret_id=args.secret_id,
        secret_key=args.secret_key,
        run_seconds=args.run_seconds,
        wait_seconds=0.0,
        max_concurrent=1_000_000,
        max_rate=args.max_rate,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
