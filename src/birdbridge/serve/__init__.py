"""The search server: ``create_app(model, index, settings)`` and ``serve(...)`` (uvicorn)."""

from .app import ServeSettings, create_app, serve

__all__ = ["ServeSettings", "create_app", "serve"]
