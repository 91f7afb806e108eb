"""Adapters for external AI services and storage. A leaf package: never imports `app`."""
