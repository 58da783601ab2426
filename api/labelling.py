"""The labelling page: a Flask app over a :class:`audioid.index.labelling.LabelSession`.

``GET /`` is the page (``static/label.html``); ``GET /api/state`` the clip to play, its group, the kNN guess and
progress; ``POST /api/answer`` (``{"hash", "class"}``), ``/api/skip``, ``/api/mixed`` (``{"hash"}``) and
``/api/undo`` change it and return the new state; ``GET /clip/<id>`` streams a clip.  Serve it with waitress
(:func:`serve_label_app`), never Flask's development server.
"""
from __future__ import annotations

import os

from flask import Flask, abort, jsonify, request, send_file

from ..index.labelling import LabelSession, StaleAnswer

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def create_label_app(pool: str | os.PathLike | LabelSession, index: str | os.PathLike | None = None,
                     **session_options) -> Flask:
    """A Flask app serving the labelling page over ``pool`` (a folder, or a ready :class:`LabelSession`).

    Parameters
    ----------
    pool : path or LabelSession
    index : path or None
        Index that learns each label and offers its kNN guess.
    **session_options
        Further :class:`LabelSession` arguments (``log``, ``mode``, ``who``, ``seed``, ``cfg``).
    """
    session = pool if isinstance(pool, LabelSession) else LabelSession(pool, index=index, **session_options)
    app = Flask(__name__, static_folder=STATIC, static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024       # answers are tiny JSON bodies
    app.config["label_session"] = session

    def body(*keys: str) -> list[str]:
        data = request.get_json(silent=True) or {}
        missing = [k for k in keys if not isinstance(data.get(k), str)]
        if missing:
            abort(400, f"missing field(s) {', '.join(missing)}")
        return [data[k] for k in keys]

    def act(fn, *args):
        try:
            fn(*args)
        except StaleAnswer as e:
            return jsonify(error=str(e), state=session.question()), 409
        except ValueError as e:
            return jsonify(error=str(e)), 400
        return jsonify(session.question())

    @app.errorhandler(400)
    @app.errorhandler(404)
    def error(e):
        return jsonify(error=e.description), e.code

    @app.get("/")
    def page():
        return send_file(os.path.join(STATIC, "label.html"))

    @app.get("/api/state")
    def state():
        return jsonify(session.question())

    @app.post("/api/answer")
    def answer():
        h, klass = body("hash", "class")
        guess = (request.get_json(silent=True) or {}).get("guess")
        return act(session.answer, h, klass, guess if isinstance(guess, dict) else None)

    @app.post("/api/skip")
    def skip():
        return act(session.skip, *body("hash"))

    @app.post("/api/mixed")
    def mixed():
        return act(session.mixed, *body("hash"))

    @app.post("/api/undo")
    def undo():
        return act(session.undo)

    @app.get("/clip/<int:clip_id>")
    def clip(clip_id: int):
        if not 0 <= clip_id < len(session.clips):
            abort(404)
        return send_file(session.clips[clip_id].path, conditional=True, max_age=3600)

    return app


def serve_label_app(app: Flask, host: str = "127.0.0.1", port: int = 8081) -> None:
    """Serve ``app`` with waitress until interrupted."""
    from waitress import serve

    serve(app, host=host, port=port, threads=4)
