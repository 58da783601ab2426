"""The HTTP API: ``create_app(index_dir, **config)`` (Flask) and ``make_server`` (waitress), for ``audioid serve``."""
from .app import create_app, make_server

__all__ = ["create_app", "make_server"]
