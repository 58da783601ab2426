"""The HTTP API: a Flask app over the same library calls as the CLI, served by waitress (``audioid serve``).

Every error is an RFC 9457 problem (``application/problem+json``) naming the problem; responses never carry a
stack trace or a server path (the index folder reads ``INDEX``, an upload its client-side file name).  Uploads
go to temporary files in a private folder and are removed when the request ends.  Queries run on
:class:`audioid.index.live.LiveIndex`, which swaps in new generations (this server's writes or another
process's ``audioid index build``) between queries.  The contract is :mod:`api.openapi` (``GET /openapi.json``).
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import unicodedata
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, MutableSequence

from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from audioid import __version__
from audioid.index.build import add_to_index, relabel_in_index, remove_from_index
from audioid.index.catalog import CLASSES, Track
from audioid.index.identify import Identifier
from audioid.index.live import LiveIndex
from audioid.index.parallel import lend_spare_core_when_alone, worker_setup
from audioid.index.result import Result
from audioid.index.sources import ReferenceSpec
from audioid.index.store import IndexLockedError, IndexStoreError, NoSuchTrackError

from .multipart import FormDataParser
from .openapi import MAX_ID, MAX_OFFSET, MAX_OUTRO_S, MAX_PAGE, MAX_TEXT, MAX_TOP, openapi_document

DEFAULTS: dict[str, Any] = {
    "max_upload_mb": 50.0,     # largest request body, in MB (10^6 bytes)
    "token": None,             # bearer token the write endpoints require (None: open)
    "token_all": False,        # require the token on read endpoints too (not /health, /openapi.json)
    "max_batch_files": 32,     # files per POST /identify/batch
    "write_wait_s": 10.0,      # how long a write waits for another writer before answering 409
    "who": "http-api",         # name logged with label changes when the request gives none
    "client_timeout_s": 120,   # a connection silent this long (stalled mid-request or idle) is closed
    "upload_root": None,       # folder the server's private upload folder is made in (None: the temp folder)
    "match_config": None,      # index.identify.MatchConfig for every query (None: the defaults)
}
#: Raw request bodies accepted as audio (besides ``audio/*``); ``application/octet-stream`` is sniffed.
RAW_AUDIO_TYPES = ("application/ogg", "application/octet-stream")
PROBLEM_TYPE = "application/problem+json"
#: Endpoints that change the index (the token guards them; ``token_all`` guards the rest too).
WRITE_ENDPOINTS = frozenset({"add_track", "relabel_track", "delete_track"})


class ApiError(Exception):
    """An error answered as a problem document: HTTP ``status``, a short ``title``, the ``detail``."""

    def __init__(self, status: int, title: str, detail: str, slug: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.title, self.detail, self.slug = status, title, detail, slug
        self.headers, self.extra = headers or {}, extra


def problem(status: int, title: str, detail: str, slug: str | None = None, headers: dict[str, str] | None = None,
            **extra: Any) -> Response:
    """An ``application/problem+json`` response; ``slug`` names our own problem types (``urn:audioid:problem:``)."""
    body = {"type": f"urn:audioid:problem:{slug}" if slug else "about:blank", "title": title, "status": status,
            "detail": detail, **extra}
    resp = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype=PROBLEM_TYPE)
    resp.headers.update(headers or {})
    return resp


@dataclass
class Upload:
    """One uploaded file: where its bytes are now (a temporary file) and the name the client gave it."""

    path: str
    filename: str | None

    @property
    def shown(self) -> str:
        return self.filename or "upload"

    def public(self, message: str) -> str:
        """``message`` naming the upload as its client did, not by its temporary file."""
        return message.replace(self.path, self.shown)


def display_name(name: str | None) -> str | None:
    """A client's file name made safe to echo: last path component, no control characters, bounded length."""
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:255] or None


def create_app(index_dir: str | os.PathLike, **config: Any) -> Flask:
    """The API app for the index at ``index_dir`` (which need not hold an index yet: 503 until it does).

    Parameters
    ----------
    index_dir : path
        Index directory.
    **config
        Keys of :data:`DEFAULTS`: ``max_upload_mb``, ``token``, ``token_all``, ``max_batch_files``,
        ``write_wait_s``, ``who``, ``client_timeout_s`` (whole seconds; applied by :func:`make_server`),
        ``upload_root``, ``match_config`` (a :class:`audioid.index.identify.MatchConfig`: how queries are
        searched and decided).

    Raises
    ------
    ValueError
        An unknown config key, or ``token_all`` without a ``token``.
    """
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(sorted(unknown))}")
    cfg = {**DEFAULTS, **config}
    if cfg["token_all"] and not cfg["token"]:
        raise ValueError("token_all needs a token")
    index_dir = os.fspath(index_dir)
    live = LiveIndex(index_dir, cfg["match_config"])
    # Private (0700): uploads never land elsewhere.
    upload_dir = tempfile.mkdtemp(prefix="audioid-api-", dir=cfg["upload_root"])
    write_lock = threading.Lock()                            # this server's writes queue instead of failing
    started = time.time()
    token = cfg["token"].encode() if cfg["token"] else None

    class UploadRequest(Request):
        form_data_parser_class = FormDataParser

        def _get_file_stream(self, *args: Any, **kwargs: Any):
            # Multipart file parts stream to disk in our folder; the file is deleted when the request closes it.
            return tempfile.NamedTemporaryFile(dir=upload_dir, prefix="upload-")

    app = Flask("audioid.api")
    app.request_class = UploadRequest
    app.json.sort_keys = False          # records keep the CLI's field order
    app.config["MAX_CONTENT_LENGTH"] = int(cfg["max_upload_mb"] * 1e6)
    app.extensions["audioid"] = {"live": live, "config": cfg, "upload_dir": upload_dir}
    weakref.finalize(app, _shut_down, live, upload_dir)

    def public(message: str) -> str:
        """``message`` without the server's index path."""
        for p in sorted({index_dir, os.path.abspath(index_dir)}, key=len, reverse=True):
            message = message.replace(p, "INDEX")
        return message

    def not_ready(e: IndexStoreError) -> ApiError:
        """The 503 for an index that cannot be read (none built yet, or damaged), to a query or a write."""
        return ApiError(503, "Index not ready", public(str(e)), "index-not-ready", {"Retry-After": "5"})

    # ------------------------------------------------------------------------------------ errors and auth ---

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError) -> Response:
        return problem(e.status, e.title, e.detail, e.slug, e.headers, **e.extra)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e: RequestEntityTooLarge) -> Response:
        return problem(413, "Upload too large", f"the request body is larger than the limit of "
                       f"{cfg['max_upload_mb']:g} MB", "too-large")

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        headers = {k: v for k, v in e.get_response().headers.items() if k in ("Allow", "Retry-After")}
        return problem(e.code or 500, e.name, e.description or e.name, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(e: Exception) -> Response:
        app.logger.exception("unexpected error in %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", "the server failed to answer this request; its log says why")

    @app.before_request
    def _check_token() -> None:
        if token is None or request.endpoint in ("health", "openapi", None) or request.method == "OPTIONS":
            return
        if request.endpoint not in WRITE_ENDPOINTS and not cfg["token_all"]:
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise ApiError(401, "Unauthorized", "this endpoint needs 'Authorization: Bearer <token>' with the "
                           "server's token", "unauthorized", {"WWW-Authenticate": 'Bearer realm="audioid"'})

    @contextmanager
    def current() -> Iterator[Identifier]:
        """The index generation for this request; 503 while there is none (no index built yet, or damaged)."""
        try:
            with live.acquire() as ident:
                yield ident
        except IndexStoreError as e:
            raise not_ready(e) from None

    # ----------------------------------------------------------------------------------------- uploads ---

    @contextmanager
    def uploads(many: bool) -> Iterator[list[Upload]]:
        """The request's audio: multipart field ``file`` (repeated when ``many``) or one raw audio body."""
        if request.mimetype == "multipart/form-data":
            parts = request.files.getlist("file")
            try:
                if not parts:
                    raise ApiError(400, "No file", "send the audio as a multipart file part named 'file'",
                                   "no-file")
                if len(parts) > (cfg["max_batch_files"] if many else 1):
                    raise ApiError(400, "Too many files", f"at most {cfg['max_batch_files'] if many else 1} "
                                   f"file part(s) per request here" + ("" if many else
                                                                        "; use POST /identify/batch"),
                                   "too-many-files")
                for p in parts:
                    p.stream.flush()
                yield [Upload(p.stream.name, display_name(p.filename)) for p in parts]
            finally:
                for p in parts:
                    p.close()
            return
        if not (request.mimetype.startswith("audio/") or request.mimetype in RAW_AUDIO_TYPES):
            raise ApiError(415, "Not audio", f"Content-Type {request.mimetype or '(none)'!r} is not audio: send "
                           "multipart/form-data with a file part 'file', or a raw body with an audio/* type",
                           "not-audio")
        limit = app.config["MAX_CONTENT_LENGTH"]
        with tempfile.NamedTemporaryFile(dir=upload_dir, prefix="upload-") as f:
            size = 0
            # Chunked bodies carry no Content-Length: count while streaming.
            for block in iter(lambda: request.stream.read(1 << 16), b""):
                size += len(block)
                if size > limit:
                    raise RequestEntityTooLarge()
                f.write(block)
            if size == 0:
                raise ApiError(400, "Empty body", "the request body holds no audio", "empty-body")
            f.flush()
            yield [Upload(f.name, display_name(request.args.get("filename")))]

    def record(result: Result, upload: Upload) -> dict[str, Any]:
        """The CLI's record with ``filename`` for ``path``; errors name the upload, not the temporary file."""
        d = result.to_dict()
        del d["path"]
        if d["error"]:
            d["error"] = upload.public(d["error"])
        return {"filename": upload.filename, **d}

    def identify_params() -> tuple[float, int]:
        outro = number_arg("outro_seconds", 10.0, float, 0.0, MAX_OUTRO_S)
        top = number_arg("top", 3, int, 1, MAX_TOP)
        return outro, top

    def identify_uploads(many: bool) -> list[dict[str, Any]]:
        outro, top = identify_params()
        with uploads(many) as files, current() as ident:
            if top != ident.classify_config.neighbours:
                ident = Identifier(ident.reader, ident.config, replace(ident.classify_config, neighbours=top))
            return [record(ident.identify_file(u.path, outro_seconds=outro), u) for u in files]

    # --------------------------------------------------------------------------------------- endpoints ---

    @app.post("/identify")
    def identify() -> Response:
        (rec,) = identify_uploads(many=False)
        if rec["status"] == "error":
            raise ApiError(422, "Undecodable audio", rec["error"], "undecodable")
        return app.json.response(rec)

    @app.post("/identify/batch")
    def identify_batch() -> Response:
        return app.json.response({"results": identify_uploads(many=True)})

    @app.get("/tracks")
    def list_tracks() -> Response:
        limit = number_arg("limit", 100, int, 1, MAX_PAGE)
        offset = number_arg("offset", 0, int, 0, MAX_OFFSET)
        label = text_arg(request.args, "label")
        klass = class_arg(request.args)
        with current() as ident:
            cat = ident.reader.catalog
            total = cat.count(label=label, klass=klass)
            tracks = cat.tracks(label=label, klass=klass, limit=limit, offset=offset)
        return app.json.response({"total": total, "offset": offset, "limit": limit,
                                  "tracks": [track_json(t) for t in tracks]})

    @app.get("/tracks/<int:track_id>")
    def get_track(track_id: int) -> Response:
        with current() as ident:
            return app.json.response(track_json(existing(ident, track_id)))

    @app.post("/tracks")
    def add_track() -> Response:
        if request.mimetype != "multipart/form-data":
            raise ApiError(415, "Not multipart", "send multipart/form-data with a file part 'file' and a field "
                           "'label'", "not-multipart")
        form = request.form
        label = text_arg(form, "label")
        if label is None:
            raise ApiError(400, "Missing label", "the field 'label' is required", "bad-parameter")
        spec = dict(label=label, title=text_arg(form, "title"), artist=text_arg(form, "artist"),
                    klass=class_arg(form))
        who = text_arg(form, "who") or cfg["who"]
        with uploads(many=False) as (upload,):
            meta = {"filename": upload.filename} if upload.filename else {}
            report = write(add_to_index, [ReferenceSpec(upload.path, metadata=meta, **spec)], index_dir, jobs=1,
                           who=who)
        if report.failed:
            raise ApiError(422, "Undecodable audio", upload.public(report.failed[0][1]), "undecodable")
        if report.duplicates:
            dup = report.duplicates[0][1]
            raise ApiError(409, "Already indexed", f"the same recording is track {dup}", "duplicate",
                           track_id=dup)
        track = report.added[0]
        resp = app.json.response(track_json(track))
        resp.status_code = 201
        resp.headers["Location"] = f"/tracks/{track.id}"
        return resp

    @app.patch("/tracks/<int:track_id>")
    def relabel_track(track_id: int) -> Response:
        if request.mimetype not in ("application/json", "application/merge-patch+json"):
            raise ApiError(415, "Not JSON", "send the changes as a JSON object (Content-Type application/json)",
                           "not-json")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "Bad JSON", "the body must be a JSON object such as {\"label\": \"new\"}",
                           "bad-parameter")
        allowed = ("label", "class", "title", "artist", "who")
        extra = sorted(set(body) - set(allowed))
        if extra:
            raise ApiError(400, "Unknown field", f"unknown field(s) {', '.join(map(repr, extra))}; allowed: "
                           f"{', '.join(allowed)}", "bad-parameter")
        changes = {k: text_arg(body, k) for k in ("label", "title", "artist")}
        changes["klass"] = class_arg(body)
        if all(v is None for v in changes.values()):
            raise ApiError(400, "Nothing to change", "give at least one of label, class, title, artist",
                           "bad-parameter")
        who = text_arg(body, "who") or cfg["who"]
        with current() as ident:
            existing(ident, track_id)
        track = write(relabel_in_index, index_dir, track_id, who=who, **changes)
        return app.json.response(track_json(track))

    @app.delete("/tracks/<int:track_id>")
    def delete_track(track_id: int) -> Response:
        who = text_arg(request.args, "who") or cfg["who"]
        with current() as ident:
            existing(ident, track_id)
        (track,) = write(remove_from_index, index_dir, [track_id], who=who)
        return app.json.response(track_json(track))

    @app.get("/health")
    def health() -> Response:
        with current() as ident:
            generation = ident.reader.generation
        return app.json.response({"status": "ok", "index_ready": True, "generation": generation,
                                  "version": __version__})

    @app.get("/stats")
    def stats() -> Response:
        with current() as ident:
            index = ident.reader.stats()
        return app.json.response({"index": index, "server": {
            "version": __version__, "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "uptime_s": round(time.time() - started, 1), "reloads": live.reloads,
            "max_upload_mb": cfg["max_upload_mb"], "token_required": token is not None,
            "token_all": bool(cfg["token_all"])}})

    document = openapi_document(token=token is not None, token_all=bool(cfg["token_all"]),
                                max_upload_mb=cfg["max_upload_mb"], max_batch_files=cfg["max_batch_files"])

    @app.get("/openapi.json")
    def openapi() -> Response:
        return app.json.response(document)

    # ------------------------------------------------------------------------------------------ helpers ---

    def write(fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run a library write, waiting up to ``write_wait_s`` for other writers (here or in other processes)."""
        deadline = time.monotonic() + cfg["write_wait_s"]
        busy = ApiError(409, "Index busy", "another process is writing to this index; try again when it has "
                        "finished", "index-busy", {"Retry-After": "2"})
        if not write_lock.acquire(timeout=cfg["write_wait_s"]):
            raise busy
        try:
            while True:
                try:
                    result = fn(*args, **kwargs)
                    break
                except IndexLockedError:
                    if time.monotonic() >= deadline:
                        raise busy from None
                    time.sleep(0.1)
                except NoSuchTrackError as e:   # removed by another request since this one looked it up
                    raise ApiError(404, "No such track", public(str(e)), "no-such-track") from None
                except IndexStoreError as e:
                    raise not_ready(e) from None
        finally:
            write_lock.release()
        live.refresh()      # the writer's next read sees its write
        return result

    def existing(ident: Identifier, track_id: int) -> Track:
        track = ident.reader.catalog.get(track_id) if track_id <= MAX_ID else None   # SQLite ids are 64-bit
        if track is None:
            raise ApiError(404, "No such track", f"no track with id {track_id}", "no-such-track")
        return track

    return app


def track_json(track: Track) -> dict[str, Any]:
    """A catalog track for HTTP: as the library gives it, without ``source_path`` (a server path)."""
    d = track.to_dict()
    del d["source_path"]
    return d


def number_arg(name: str, default: float, kind: type, low: float, high: float) -> Any:
    """Query parameter ``name`` as ``kind`` (int or float) within ``[low, high]``, else 400 naming it."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not (low <= value <= high):   # NaN and infinities fail the range too
        raise ApiError(400, "Bad parameter", f"{name} must be {'an integer' if kind is int else 'a number'} "
                       f"from {low:g} to {high:g}, got {raw!r}", "bad-parameter")
    return value


def text_arg(source: Any, name: str) -> str | None:
    """Optional text field ``name``: absent is None; present, it must be a string with a non-space character, at
    most :data:`MAX_TEXT` characters (returned stripped)."""
    if name not in source:
        return None
    value = source.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "Bad parameter", f"{name} must be a non-empty string", "bad-parameter")
    value = value.strip()
    if len(value) > MAX_TEXT:
        raise ApiError(400, "Bad parameter", f"{name} is longer than {MAX_TEXT} characters", "bad-parameter")
    return value


def class_arg(source: Any) -> str | None:
    """Optional field ``class``: absent is None; present, one of :data:`CLASSES`."""
    if "class" not in source:
        return None
    value = source.get("class")
    if value not in CLASSES:
        raise ApiError(400, "Bad parameter", f"class must be one of {', '.join(CLASSES)}, got {value!r}",
                       "bad-parameter")
    return value


def _shut_down(live: LiveIndex, upload_dir: str) -> None:
    live.close()
    shutil.rmtree(upload_dir, ignore_errors=True)


def make_server(app: Flask, *, host: str = "127.0.0.1", port: int = 8080, threads: int = 4,
                sock: socket.socket | None = None, running: MutableSequence[int] | None = None, slot: int = 0):
    """A waitress server for ``app`` (from :func:`create_app`), not yet running: call ``.run()``.  Limits BLAS and
    OpenMP (FAISS) to one thread and steadies the heap for the whole process
    (:func:`audioid.index.parallel.worker_setup`), and lends a request the second core while it is the only one
    running (:func:`audioid.index.parallel.lend_spare_core_when_alone`).  ``running`` is an array of request
    counts shared by a server's processes (this one's at ``slot``, see :mod:`api.workers`); by default this
    server's own.

    ``port=0`` picks a free port (``.effective_port``).  With ``sock`` (a bound TCP socket) the server accepts
    on it instead of binding ``host``/``port`` (several worker processes share one, see :mod:`api.workers`).
    Waitress reads each request body completely before the app sees it; its own limit sits 1 MB above the
    app's so that oversize uploads get the app's 413 problem.  A connection that sends nothing for the app's
    ``client_timeout_s`` is closed within about 1.1 times that plus a second, so stalled clients cannot hold
    connections forever.
    """
    import waitress

    worker_setup()          # requests already run in parallel threads (and workers in parallel processes)
    # Requests running, counted around the app: only a request that runs alone in the whole server gets a core
    # of its own to split its query over (under load the cores are the other requests').
    counts = [0] if running is None else running
    lock = threading.Lock()

    def counted(environ: dict[str, Any], start_response: Callable) -> Any:
        with lock:
            counts[slot] += 1
        try:
            return app(environ, start_response)
        finally:
            with lock:
                counts[slot] -= 1

    lend_spare_core_when_alone(lambda: sum(counts))
    # Waitress warns "Task queue depth is N" whenever a request waits for a thread: with kept-open connections
    # from more clients than threads that is every other request, which would bury the log.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # python-multipart logs a warning for each malformed body it sees; the client already gets a 400 naming it.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    timeout = int(app.extensions["audioid"]["config"]["client_timeout_s"])
    where: dict[str, Any] = {"sockets": [sock]} if sock is not None else {"host": host, "port": port}
    # Waitress looks for silent connections every cleanup_interval (default 30 s): scale it with the timeout.
    # Uploads are read 64 KB per call rather than 8 KB: a 10 s MP3 in 3 turns of its loop instead of 20.
    return waitress.create_server(counted, threads=threads, ident="audioid", recv_bytes=1 << 16,
                                  max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + (1 << 20),
                                  channel_timeout=timeout, cleanup_interval=max(1, min(30, timeout // 10)),
                                  **where)
