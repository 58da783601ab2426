"""Shared fixtures: a library of synthetic reference tracks and its index, built once per test session.

All audio is generated with :mod:`audioid.synth` (deterministic), so the suite needs no downloads.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import audioid
from audioid import synth

SR = 16000            # synthetic references' rate (the analysis runs at 8 kHz)
N_TRACKS = 8


@dataclass
class Library:
    """Synthetic references on disk and the index built from them."""

    refs: Path                      # refs/track1.wav ... refs/track8.wav
    index: Path
    tracks: dict[str, np.ndarray]   # label -> samples at SR
    sr: int = SR

    def ref_path(self, label: str) -> Path:
        return self.refs / f"{label}.wav"

    def duration(self, label: str) -> float:
        return len(self.tracks[label]) / self.sr

    def at_tempo(self, label: str, tempo: float) -> np.ndarray:
        """The whole of ``label`` played ``tempo`` times as fast with its pitch kept (time compression)."""
        return synth.music_track(_SEEDS[label], self.duration(label) / tempo, self.sr, tempo=tempo)


def _track_seconds(i: int) -> float:
    return 30.0 + 2 * i             # 32-46 s, distinct lengths


_SEEDS = {f"track{i}": i for i in range(1, N_TRACKS + 1)}


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root = tmp_path_factory.mktemp("library")
    refs = root / "refs"
    refs.mkdir()
    tracks = {}
    for label, i in _SEEDS.items():
        tracks[label] = synth.music_track(i, _track_seconds(i), SR)
        sf.write(refs / f"{label}.wav", tracks[label], SR)
    report = audioid.build_index(refs, root / "index", jobs=1)
    assert len(report.added) == N_TRACKS and not report.failed and not report.duplicates
    return Library(refs=refs, index=root / "index", tracks=tracks)


def outro_recording(lib: Library, label: str, seconds: float = 10.0, talk_seconds: float = 4.0,
                    talk_seed: int = 0, tempo: float = 1.0) -> np.ndarray:
    """A broadcast-like recording: presenter talk, then the last ``seconds`` of ``label`` (its outro), played
    ``tempo`` times as fast with its pitch kept (time compression) when ``tempo`` is not 1."""
    talk = synth.speech_like(talk_seed, talk_seconds, lib.sr)
    track = lib.tracks[label] if tempo == 1.0 else lib.at_tempo(label, tempo)
    return np.concatenate([talk, track[-int(seconds * lib.sr):]])


def cpu_ticks(pid: int) -> int:
    """User + system CPU ticks of process ``pid`` so far (Linux /proc); 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    return int(fields[11]) + int(fields[12])


def audioid_command() -> list[str]:
    """The installed ``audioid`` console script (beside this interpreter), else ``python -m audioid.cli``."""
    script = Path(sys.executable).with_name("audioid")
    if script.exists():
        return [str(script)]
    found = shutil.which("audioid")
    return [found] if found else [sys.executable, "-m", "audioid.cli"]


def run_cli(*args: str | os.PathLike, cwd: str | os.PathLike | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (stdout is a pipe, so output formats default as in a pipeline)."""
    return subprocess.run([*audioid_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
