"""The API's contract: an OpenAPI 3.1 document, written by hand, served as ``GET /openapi.json``.

tests/test_api.py checks real responses against it (schemathesis); when an endpoint changes, change it here too.
"""
from __future__ import annotations

from typing import Any

from audioid.index.catalog import CLASSES

# The limits the API enforces (api/app.py) and this document states.
MAX_ID = 2**63 - 1           # SQLite ids are 64-bit
MAX_TOP = 20                 # neighbours listed per record
MAX_OUTRO_S = 86400.0
MAX_PAGE = 1000              # tracks per GET /tracks page
MAX_OFFSET = 2**62
MAX_TEXT = 500               # characters of a label, title, artist or who
TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"\S"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


PROBLEMS = {
    400: "Bad request: a parameter or field is missing or invalid (the detail names it).",
    401: "The bearer token is missing or wrong.",
    404: "No such track (or no such path).",
    409: "The recording is already indexed (``track_id`` names it), or another process kept the index locked.",
    413: "The request body is larger than the upload limit.",
    415: "The body is not audio (raw bodies) or not the expected form (multipart, JSON).",
    422: "The audio cannot be decoded (the detail says why).",
    503: "The index is not ready: none has been built yet, or it cannot be opened.",
}


def _responses(ok: dict[str, dict[str, Any]], *codes: int) -> dict[str, Any]:
    out = dict(ok)
    for code in codes:
        out[str(code)] = {"$ref": f"#/components/responses/Problem{code}"}
    out["500"] = {"$ref": "#/components/responses/Problem500"}
    return out


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False
           ) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


def openapi_document(*, token: bool = False, token_all: bool = False, max_upload_mb: float = 50,
                     max_batch_files: int = 32) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app with this configuration (which operations need the token)."""
    identify_params = [
        _param("outro_seconds", "query", {"type": "number", "minimum": 0, "maximum": MAX_OUTRO_S, "default": 10},
               "Seconds of sound analysed at the end of the file (trailing silence is read past); 0 analyses "
               "the whole file."),
        _param("top", "query", {"type": "integer", "minimum": 1, "maximum": MAX_TOP, "default": 3},
               "How many similar reference tracks to list in ``neighbours``."),
    ]
    raw_audio = {"schema": {"type": "string", "format": "binary"}}
    track_id = {**_param("track_id", "path", {"type": "integer", "minimum": 0, "maximum": MAX_ID}, "Track id.",
                        required=True), "example": 1}
    who = {**TEXT, "description": "Name logged with the change in the index's label log (default: the server's)."}
    write_security = [{"bearer": []}] if token else None
    read_security = [{"bearer": []}] if token_all else None

    def op(summary: str, responses: dict[str, Any], *, write: bool = False, public: bool = False,
           **more: Any) -> dict[str, Any]:
        out = {"summary": summary, "operationId": more.pop("operationId"), **more, "responses": responses}
        security = None if public else (write_security if write else read_security)
        if security:
            out["security"] = security
            responses.setdefault("401", {"$ref": "#/components/responses/Problem401"})
        return out

    record = {
        "type": "object", "additionalProperties": False,
        "required": ["filename", "status", "label", "title", "artist", "track_id", "score", "confidence", "offset_s",
                     "speed", "pitch", "query_start_s", "query_end_s", "class", "class_confidence", "neighbours",
                     "error"],
        "properties": {
            "filename": _nullable({"type": "string", "description": "The client's file name, if it sent one."}),
            "status": {"type": "string", "enum": ["match", "no_match", "error"]},
            "label": _nullable({"type": "string"}), "title": _nullable({"type": "string"}),
            "artist": _nullable({"type": "string"}), "track_id": _nullable({"type": "integer"}),
            "score": {"type": "integer", "description": "Aligned landmark votes of the best candidate."},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "offset_s": _nullable({"type": "number"}),
            "speed": _nullable({"type": "number", "description": "How many times as fast the query plays as the "
                                "reference."}),
            "pitch": _nullable({"type": "number", "description": "Ratio of the query's frequencies to the "
                                "reference's: speed for audio played faster, 1 for audio time-compressed."}),
            "query_start_s": _nullable({"type": "number"}), "query_end_s": _nullable({"type": "number"}),
            "class": {"type": ["string", "null"], "enum": [*CLASSES, "unknown", None]},
            "class_confidence": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
            "neighbours": {"type": ["array", "null"], "items": _ref("Neighbour")},
            "error": _nullable({"type": "string"}),
        },
    }
    track = {
        "type": "object", "additionalProperties": False,
        "required": ["track_id", "label", "title", "artist", "class", "content_hash", "duration_s", "added_at",
                     "n_hashes", "metadata"],
        "properties": {
            "track_id": {"type": "integer"}, "label": {"type": "string"},
            "title": _nullable({"type": "string"}), "artist": _nullable({"type": "string"}),
            "class": {"type": ["string", "null"], "enum": [*CLASSES, None]},
            "content_hash": {"type": "string", "description": "SHA-256 of the reference file's bytes."},
            "duration_s": {"type": "number"}, "added_at": {"type": "string"}, "n_hashes": {"type": "integer"},
            "metadata": {"type": "object", "description": "Extra manifest columns; ``filename`` for uploads."},
        },
    }
    index_stats = {
        "type": "object",
        "required": ["tracks", "classes", "hashes", "hours", "size_bytes", "format_version", "generation",
                     "segments", "vectors", "vector_index", "builtin_examples", "created_at", "updated_at"],
        "properties": {
            "tracks": {"type": "integer"},
            "classes": {"type": "object", "description": "Live tracks per class, and those with none.",
                        "required": [*CLASSES, "unlabelled"],
                        "properties": {c: {"type": "integer"} for c in (*CLASSES, "unlabelled")}},
            "hashes": {"type": "integer"}, "hours": {"type": "number"},
            "size_bytes": {"type": "integer"}, "format_version": {"type": "integer"},
            "generation": {"type": "integer"}, "segments": {"type": "integer"}, "vectors": {"type": "integer"},
            "vector_index": {"type": "string"},
            "builtin_examples": {"type": "boolean", "description": "Whether the package's built-in labelled "
                                 "examples vote on the class too (the index holds fewer than 5 labelled tracks "
                                 "of some class)."},
            "created_at": _nullable({"type": "string"}), "updated_at": _nullable({"type": "string"}),
        },
    }
    server_stats = {
        "type": "object",
        "required": ["version", "pid", "started_at", "uptime_s", "reloads", "max_upload_mb", "token_required",
                     "token_all"],
        "properties": {
            "version": {"type": "string"},
            "pid": {"type": "integer", "description": "Process that answered (one of the workers, with --workers)."},
            "started_at": {"type": "string"}, "uptime_s": {"type": "number"},
            "reloads": {"type": "integer", "description": "Index generations opened since start."},
            "max_upload_mb": {"type": "number"}, "token_required": {"type": "boolean"},
            "token_all": {"type": "boolean"},
        },
    }
    schemas = {
        "Problem": {
            "type": "object", "required": ["type", "title", "status", "detail"],
            "description": "RFC 9457 problem details (``application/problem+json``).",
            "properties": {
                "type": {"type": "string", "description": "``urn:audioid:problem:<name>`` or ``about:blank``."},
                "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
                "track_id": {"type": "integer", "description": "409 duplicate: the track already holding it."},
            },
        },
        "Neighbour": {"type": "object", "required": ["track_id", "label", "similarity"],
                      "properties": {"track_id": {"type": "integer"}, "label": {"type": "string"},
                                     "similarity": {"type": "number"}}},
        "Record": record,
        "BatchResult": {"type": "object", "required": ["results"], "additionalProperties": False,
                        "properties": {"results": {"type": "array", "items": _ref("Record")}}},
        "Track": track,
        "TrackPage": {"type": "object", "required": ["total", "offset", "limit", "tracks"],
                      "additionalProperties": False,
                      "properties": {"total": {"type": "integer"}, "offset": {"type": "integer"},
                                     "limit": {"type": "integer"},
                                     "tracks": {"type": "array", "items": _ref("Track")}}},
        "TrackChanges": {
            "type": "object", "additionalProperties": False, "minProperties": 1,
            "description": "At least one of label, class, title, artist; absent fields stay as they are.",
            "properties": {"label": TEXT, "title": TEXT, "artist": TEXT, "class": {"type": "string", "enum": CLASSES},
                           "who": who},
        },
        "Health": {"type": "object", "required": ["status", "index_ready", "generation", "version"],
                   "properties": {"status": {"const": "ok"}, "index_ready": {"const": True},
                                  "generation": {"type": "integer"}, "version": {"type": "string"}}},
        "Stats": {"type": "object", "required": ["index", "server"],
                  "properties": {"index": index_stats, "server": server_stats}},
    }
    problem_content = {"application/problem+json": {"schema": _ref("Problem")}}
    responses = {f"Problem{code}": {"description": text, "content": problem_content}
                 for code, text in {**PROBLEMS, 500: "Unexpected server error (details only in the server log)."
                                    }.items()}
    responses["Problem413"]["description"] += f" (this server: {max_upload_mb:g} MB)"

    paths = {
        "/identify": {"post": op(
            "Identify the music at the end of one recording", operationId="identify",
            description="The same record as ``audioid identify`` gives, with ``filename`` instead of ``path``. "
                        "Send multipart/form-data with one file part ``file``, or the raw audio as the body "
                        "(``audio/*``, ``application/ogg`` or ``application/octet-stream``; then ``filename`` "
                        "may name it).",
            parameters=[*identify_params, _param("filename", "query", {"type": "string"},
                                                 "Name of a raw upload, echoed in the record.")],
            requestBody={"required": True, "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary"}}}},
                "audio/*": raw_audio, "application/ogg": raw_audio, "application/octet-stream": raw_audio}},
            responses=_responses({"200": _json("Record", "The identify record.")}, 400, 413, 415, 422, 503))},
        "/identify/batch": {"post": op(
            "Identify several recordings", operationId="identifyBatch",
            description=f"Repeat the file part ``file`` (at most {max_batch_files}); one record per file, in "
                        "order.  A file that cannot be decoded gets a record with status ``error``.",
            parameters=identify_params,
            requestBody={"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file"], "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                             "maxItems": max_batch_files}}}}}},
            responses=_responses({"200": _json("BatchResult", "One record per file, in order.")},
                                 400, 413, 415, 503))},
        "/tracks": {
            "get": op("List indexed tracks, a page at a time", operationId="listTracks", parameters=[
                _param("label", "query", TEXT, "Only tracks with this label."),
                _param("class", "query", {"type": "string", "enum": CLASSES}, "Only tracks of this class."),
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100},
                       "Tracks per page."),
                _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
                       "Tracks to skip (by id order)."),
            ], responses=_responses({"200": _json("TrackPage", "One page of tracks by id, and the total.")},
                                    400, 503)),
            "post": op(
                "Add a reference track (online, no rebuild)", operationId="addTrack", write=True,
                description="Effective for the next query.  The uploaded audio is analysed, not kept.",
                requestBody={"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file", "label"], "properties": {
                        "file": {"type": "string", "format": "binary"}, "label": TEXT, "title": TEXT,
                        "artist": TEXT, "class": {"type": "string", "enum": CLASSES}, "who": who}}}}},
                responses=_responses({"201": {**_json("Track", "The new track."), "headers": {"Location": {
                    "description": "``/tracks/<id>``", "schema": {"type": "string"}}}}},
                    400, 409, 413, 415, 422, 503)),
        },
        "/tracks/{track_id}": {
            "parameters": [track_id],
            "get": op("One track", operationId="getTrack",
                      responses=_responses({"200": _json("Track", "The track.")}, 404, 503)),
            "patch": op("Change a track's label, class, title or artist", operationId="relabelTrack", write=True,
                        description="Logged in the label log; effective for the next query.",
                        requestBody={"required": True, "content": {
                            "application/json": {"schema": _ref("TrackChanges")},
                            "application/merge-patch+json": {"schema": _ref("TrackChanges")}}},
                        responses=_responses({"200": _json("Track", "The track as changed.")},
                                             400, 404, 409, 415, 503)),
            "delete": op("Remove a track", operationId="removeTrack", write=True,
                         description="Logged; effective for the next query.",
                         parameters=[_param("who", "query", who, who["description"])],
                         responses=_responses({"200": _json("Track", "The removed track.")}, 400, 404, 409, 503)),
        },
        "/health": {"get": op("Liveness, and whether the index is loaded", operationId="health", public=True,
                              responses=_responses({"200": _json("Health", "Alive, with the index loaded.")},
                                                   503))},
        "/stats": {"get": op("Index and server figures", operationId="stats",
                             responses=_responses({"200": _json("Stats", "Figures of the generation served.")},
                                                  503))},
        "/openapi.json": {"get": op("This document", operationId="openapi", public=True,
                                    responses={"200": {"description": "OpenAPI 3.1 document.",
                                                       "content": {"application/json": {"schema": {
                                                           "type": "object"}}}}})},
    }
    components: dict[str, Any] = {"schemas": schemas, "responses": responses}
    if token:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ml-audio-id", "version": "1",
                 "description": "Identify the music at the end of broadcast recordings; manage the reference "
                                "index.  Errors are RFC 9457 problem documents."},
        "paths": paths,
        "components": components,
    }
