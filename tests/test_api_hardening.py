"""API hardening (issue 6 part 3) over real HTTP: stalled clients are disconnected without starving others, and
malformed requests get problems that name no server path and carry no traceback."""
from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import requests

from conftest import Library
from test_api import assert_problem, index_copy, serving

TIMEOUT_S = 2


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes ``sock`` (reading and discarding whatever it sends first)."""
    t0 = time.monotonic()
    while sock.recv(4096):
        pass
    return time.monotonic() - t0


def test_stalled_clients_are_disconnected(library: Library, tmp_path: Path) -> None:
    stalls = [b"GET /health HTTP/1.1\r\nHost: x\r\n",                                   # headers never end
              b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
              b"Content-Length: 100000\r\n\r\nRIFF"]                                    # body never comes
    with serving(index_copy(library, tmp_path), client_timeout_s=TIMEOUT_S) as url:
        port = int(url.rsplit(":", 1)[1])
        # Twice as many stalled connections as server threads: they must not hold a thread each.
        socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]
        try:
            for i, s in enumerate(socks):
                s.sendall(stalls[i % 2])
            t0 = time.monotonic()
            for _ in range(3):
                assert requests.get(f"{url}/health", timeout=5).status_code == 200
            assert requests.get(f"{url}/tracks", params={"limit": 2}, timeout=5).status_code == 200
            assert time.monotonic() - t0 < TIMEOUT_S
            waited = [time.monotonic() - t0 + _closed_after(s) for s in socks]
        finally:
            for s in socks:
                s.close()
        # Waitress looks every max(1, timeout // 10) s, its loop wakes every second: allow for both.
        assert all(TIMEOUT_S - 0.5 <= w <= TIMEOUT_S + 3 for w in waited), waited
        assert requests.get(f"{url}/health", timeout=5).status_code == 200


def test_malformed_requests_leak_no_path_or_trace(library: Library, tmp_path: Path) -> None:
    index = index_copy(library, tmp_path)
    secrets = (str(index), str(library.index), "audioid-api-", "upload-", "site-packages")
    with serving(index, token="t0ken") as url:
        auth = {"Authorization": "Bearer t0ken"}
        track = requests.get(f"{url}/tracks", params={"limit": 1}).json()["tracks"][0]["track_id"]
        cases = [
            (requests.patch(f"{url}/tracks/{track}", data=b"{bad json", headers={**auth, "Content-Type":
                                                                                   "application/json"}), 400),
            (requests.patch(f"{url}/tracks/{track}", json=["label", "x"], headers=auth), 400),
            (requests.patch(f"{url}/tracks/{track}", json={"label": "x" * 501}, headers=auth), 400),
            (requests.patch(f"{url}/tracks/{track}", json={"label": "x"}, headers={"Authorization": "Bearer no"}),
             401),
            (requests.get(f"{url}/tracks/{10**30}"), 404),
            (requests.get(f"{url}/tracks", params={"limit": "1e999"}), 400),
            (requests.get(f"{url}/tracks", params={"class": "../../etc"}), 400),
            (requests.post(f"{url}/tracks", data={"label": "x"}, headers=auth,
                           files={"file": ("../../../etc/passwd", b"root:x:0:0\n" * 50)}), 422),
            (requests.post(f"{url}/identify", data=b"--nope\r\nContent-Disposition: form-data\r\n\r\nabc",
                           headers={"Content-Type": "multipart/form-data; boundary=other"}), 400),
            (requests.post(f"{url}/identify", data=b"RIFF\xff\xff\xff\x7fWAVEfmt " + b"\x00" * 4000,
                           headers={"Content-Type": "audio/wav"}), 422),
            (requests.delete(f"{url}/tracks/-1", headers=auth), 404),
        ]
        for r, status in cases:
            body = assert_problem(r, status, *secrets)
            assert "Traceback" not in body["detail"]
        assert "passwd" in cases[7][0].json()["detail"] and "etc/passwd" not in cases[7][0].text

        # Broken HTTP is answered by waitress itself: plain text, still without a trace or a path.
        port = int(url.rsplit(":", 1)[1])
        for raw in (b"GARBAGE\r\n\r\n", b"GET /health HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                    b"GET /\x00\xff HTTP/1.1\r\nHost: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(raw)
                reply = s.recv(65536).decode("latin-1")
            assert re.match(r"HTTP/1\.[01] 4\d\d ", reply), reply
            assert "Traceback" not in reply and not any(x in reply for x in secrets)

