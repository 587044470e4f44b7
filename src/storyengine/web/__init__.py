"""The web app: write, watch and steer a story in the browser (needs the `web` extra)."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
