"""The HTTP API that LiteMaaS and application instances call: routes (app.py), error answers (problems.py)."""

from .app import build_app, serve

__all__ = ["build_app", "serve"]
