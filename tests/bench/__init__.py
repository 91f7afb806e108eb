"""Benchmarks of the gateway with production backends; outside the default test run.

Run them with `make bench` (or `.venv/bin/python -m tests.bench --help`); see README.md.
"""
