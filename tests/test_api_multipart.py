"""multipart/form-data bodies (api.multipart), hand-built so that every byte the parser sees is known: fields
with charsets and RFC 2231 file names over real HTTP; boundaries straddling the parser's read size on the parser
itself, byte for byte; malformed bodies over real HTTP, which must be 400s that say what is wrong and leave no
upload file behind (``serving`` checks the upload folder is empty when the server stops)."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import requests
import soundfile as sf

from audioid import synth
from audioid.api.multipart import CHUNK_BYTES, FormDataParser
from conftest import Library
from test_api import assert_problem, index_copy, serving

BOUNDARY = "b0undary-7Qx"
CT = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def part(disposition: str, data: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in (f"Content-Disposition: form-data; {disposition}", *headers))
    return f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + b"\r\n"


def body(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def test_fields_charsets_and_rfc2231_file_names(library: Library, tmp_path: Path) -> None:
    new = tmp_path / "new.wav"
    sf.write(new, synth.music_track(99, 20.0, library.sr), library.sr)      # not in the index yet
    with serving(index_copy(library, tmp_path)) as url:
        # A preamble before the first boundary is ignored; a Latin-1 field is decoded as Latin-1.
        r = requests.post(f"{url}/tracks", headers=CT, data=b"ignored preamble\r\n" + body(
            part('name="label"', "Café Olé".encode()),
            part('name="title"', "Tête".encode("iso-8859-1"), "Content-Type: text/plain; charset=iso-8859-1"),
            part('name="class"', b"music"),
            part("name=\"file\"; filename=\"x.wav\"; filename*=UTF-8''%C3%A9t%C3%A9%20song.wav",
                 new.read_bytes(), "Content-Type: audio/wav")))
        assert r.status_code == 201, r.text
        track = r.json()
        assert (track["label"], track["title"], track["class"]) == ("Café Olé", "Tête", "music")
        assert track["metadata"]["filename"] == "été song.wav"
        assert track["content_hash"] == hashlib.sha256(new.read_bytes()).hexdigest()     # byte for byte
        # The same file identifies as the track just added.
        r = requests.post(f"{url}/identify", headers=CT, data=body(
            part('name="file"; filename="q.wav"', new.read_bytes())))
        assert r.json()["track_id"] == track["track_id"] and r.json()["filename"] == "q.wav"


def test_boundaries_straddling_reads() -> None:
    """Closing and inner boundaries that start a few bytes before or after the parser's read size, with file bytes
    full of CR LF and boundary-like runs: every part comes back byte for byte (the parser straight on a stream,
    its files in memory, so the bytes can be compared)."""
    tricky = b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n--\r\n"
    head = part('name="file"; filename="a.bin"', b"")[:-2]          # without the data's closing CR LF
    b = b"\r\n" * 40 + tricky
    parser = FormDataParser(stream_factory=lambda **_: io.BytesIO(), max_form_memory_size=500_000)
    for shift in (-8, -3, -1, 0, 2):
        a = tricky * 50
        a += b"x" * (CHUNK_BYTES + shift - len(head) - len(a))
        raw = body(head + a + b"\r\n", part('name="note"', tricky), part('name="file"; filename="b.bin"', b))
        _, form, files = parser.parse(io.BytesIO(raw), "multipart/form-data", len(raw), {"boundary": BOUNDARY})
        assert [f.filename for f in files.getlist("file")] == ["a.bin", "b.bin"]
        assert [f.read() for f in files.getlist("file")] == [a, b], shift
        assert form["note"] == tricky.decode()


def test_malformed_bodies_are_400s_naming_the_problem(library: Library, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    data = b"\xff\xfb" + b"\x00" * 5000
    cases = [
        (CT, body(part('name="file"; filename="a.mp3"', data), close=False), "closing boundary"),
        (CT, f"--{BOUNDARY}\r\nContent-Type: audio/mpeg\r\n\r\n".encode() + data + f"\r\n--{BOUNDARY}--\r\n"
         .encode(), "Content-Disposition"),
        ({"Content-Type": "multipart/form-data"}, body(part('name="file"; filename="a.mp3"', data)), "boundary"),
        (CT, b"no boundary anywhere in this body", "no boundary line"),
        (CT, f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"\xff\"\r\n\r\nx\r\n".encode("latin-1"),
         "malformed"),
        (CT, f"--{BOUNDARY}\r\nContent-Disposition form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(), "header"),
    ]
    with serving(index_copy(library, tmp_path), token="t") as url:
        for headers, raw, words in cases:
            for path in ("/identify", "/identify/batch", "/tracks"):
                hdrs = {**headers, "Authorization": "Bearer t"}
                detail = assert_problem(requests.post(f"{url}{path}", headers=hdrs, data=raw), 400)["detail"]
                assert "multipart" in detail and words in detail, (path, detail)
        # Limits stay werkzeug's: a text field over max_form_memory_size (Flask's 500 KB) is a 413.
        big = body(part('name="label"', b"x" * 600_000), part('name="file"; filename="a.mp3"', data))
        assert_problem(requests.post(f"{url}/tracks", headers={**CT, "Authorization": "Bearer t"}, data=big), 413)
        # The server is unharmed, and its log is not flooded by its clients' mistakes.
        assert requests.get(f"{url}/health").status_code == 200
    assert not [r for r in caplog.records if r.name.startswith("python_multipart")]
