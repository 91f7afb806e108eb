"""Runs the benchmarks and prints one table: figure, floor, ratio, target, met.

    .venv/bin/python -m tests.bench [--quick] [--only latency,capacity,...] [--out PATH]
    make bench BENCH_ARGS="--quick"

Each benchmark starts its own MariaDB database, Redis namespace and processes, measures
the gateway and its floor in the same run, and removes everything afterwards. Results
also go to var/bench/results.json (or --out) with every detail measured.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

from tests.bench.common import VAR, Options, Row, fmt, log, raise_nofile

BENCHMARKS = {
    "latency": "tests.bench.latency",
    "capacity": "tests.bench.capacity",
    "gallery": "tests.bench.gallery",
    "pipeline": "tests.bench.pipeline",
    "slow_vendors": "tests.bench.slow_vendors",
    "queue_position": "tests.bench.queue_position",
}
LABELS = {name: f"{i} {name.replace('_', ' ')}" for i, name in enumerate(BENCHMARKS, 1)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--quick", action="store_true", help="every size ~10x smaller")
    parser.add_argument("--out", type=Path, default=VAR / "results.json")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="LUMI_LOG_LEVEL of the gateway processes and the floors' uvicorn (default: "
        "info, the production default)",
    )
    parser.add_argument(
        "--py-spy",
        nargs="?",
        const=shutil.which("py-spy") or "/tmp/pyspy-venv/bin/py-spy",
        default=None,
        help="profile the process under load with this py-spy binary; summaries go to "
        "var/bench/run-*/profile-*.summary.txt",
    )
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    return args


def table(rows: list[Row]) -> str:
    header = ("benchmark", "figure", "floor", "ratio", "target", "met")
    lines = [
        (
            row.benchmark,
            f"{row.figure}: {fmt(row.value, row.unit)}",
            f"{row.floor_label}: {fmt(row.floor, row.unit)}" if row.floor_label else "-",
            f"{row.ratio:.2f}x" if row.ratio is not None else "-",
            row.target,
            "-" if row.met is None else ("yes" if row.met else "NO"),
        )
        for row in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    rule = "-+-".join("-" * w for w in widths)

    def render(values: tuple[str, ...]) -> str:
        return " | ".join(str(v).ljust(w) for v, w in zip(values, widths, strict=True))

    return "\n".join([render(header), rule, *(render(line) for line in lines)])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    raise_nofile()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work_dir = VAR / f"run-{stamp}"
    work_dir.mkdir(parents=True, exist_ok=True)
    opts = Options(
        quick=args.quick, log_level=args.log_level, work_dir=work_dir, py_spy=args.py_spy
    )
    rows: list[Row] = []
    timings: dict[str, float] = {}
    crashed = False
    chosen = set(args.only.split(","))
    for name in [n for n in BENCHMARKS if n in chosen]:
        started = time.monotonic()
        log(f"=== {name} ({'quick' if args.quick else 'full'}) ===")
        try:
            module = importlib.import_module(BENCHMARKS[name])
            rows.extend(module.run(opts))
        except Exception as exc:
            traceback.print_exc()
            crashed = True
            failure = f"FAILED: {type(exc).__name__}: {exc}"[:160]
            rows.append(Row(LABELS[name], failure, None, "", met=False))
        finally:
            _drop_stored_files(work_dir)
        timings[name] = round(time.monotonic() - started, 1)
        log(f"=== {name} took {timings[name]} s ===")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "when": stamp,
                "quick": args.quick,
                "log_level": args.log_level,
                "machine": {"cpus": _cpus(), "python": platform.python_version()},
                "seconds": timings,
                "work_dir": str(work_dir),
                "rows": [row.as_dict() for row in rows],
            },
            indent=2,
            default=str,
        )
    )
    print()
    print(table(rows))
    print(f"\n{'quick' if args.quick else 'full'} run, {_cpus()} CPUs; details: {args.out}")
    # Targets not met are findings, not failures: only a benchmark that broke fails.
    return 1 if crashed else 0


def _drop_stored_files(work_dir: Path) -> None:
    """Images and models the benchmark stored (and provider scratch space): logs stay."""
    for name in ("files", "provider-work"):
        for path in list(work_dir.glob(f"*/{name}")):
            shutil.rmtree(path, ignore_errors=True)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
