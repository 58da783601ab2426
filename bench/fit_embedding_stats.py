"""Fit the shipped embedding transform (``fingerprint/data/embedding-v<version>.json``) on the real corpus.

The transform (:class:`audioid.fingerprint.embedding.Standardizer`: per-dimension mean and scale, block weights,
a projection on the first ``--out-dim`` principal axes) is fitted once per embedding config version and shipped
with the package, so every index maps vectors the same way and an index grown by adds answers exactly like one
built in one go.  It is fitted only on clips of the :data:`TUNING_PACKAGES` (four music packages, three speech
packages), with equal numbers of music, dialogue and speech-over-music clips, so ``bench/classify.py`` can report
figures on packages the transform never saw.  The same file also ships the transform's discriminant axes
(:mod:`audioid.fingerprint.discriminant`, fitted on the same vectors), which label collection clusters on, and
``fingerprint/data/examples-v<version>.npy`` holds the class vote's built-in examples
(:mod:`audioid.index.examples`): index vectors of clips of *every* package, as many of each class as the rarest
class has (:func:`builtin_examples`; ``bench/classify.py --index-classes`` measures them drawn the same way from
the other folds).  The same inputs give the same files, byte for byte; a refit that differs from the shipped
files by float rounding only (index vectors and discriminant coordinates within 1e-4, beyond the examples' half
precision) keeps the shipped values.

This module also defines the benchmark's clip set, shared with ``bench/classify.py``: 10 s *music* clips (evenly
spaced excerpts and the outro of each corpus music track), *dialogue* clips (consecutive 10 s of each speech
passage), and *both* clips (a dialogue clip mixed over a music clip at a music-to-speech power ratio drawn from
-12 to +6 dB).  Decoded clips are cached in ``~/.cache/ml-audio-id/bench/`` (never in the repository).

Usage::

    OPENBLAS_NUM_THREADS=1 python bench/fit_embedding_stats.py [--out-dim 32] [--check]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from audioid import synth
from audioid.fingerprint.audio import resample, to_mono
from audioid.fingerprint.discriminant import Discriminant
from audioid.fingerprint.embedding import EmbeddingConfig, Standardizer, embed, standardizer_path
from audioid.index.examples import examples_path, read_examples, to_records, write_examples

CORPUS = os.path.expanduser("~/.cache/ml-audio-id/corpus")
CACHE = os.path.expanduser("~/.cache/ml-audio-id/bench")
CLIP_S = 10.0
SILENT_DBFS = -50.0   # clips quieter than this (fade-outs, gaps) hold no music or speech to classify
MUSIC_CLIPS = 4       # per music track, the last being the outro
SPEECH_CLIPS = 3      # consecutive clips per speech passage
#: Packages whose clips fit the shipped transform; the others are never seen by it.  Both Allison Smith
#: packages (en, es: one speaker) are here, so no held-out voice is in the fit.
TUNING_PACKAGES = frozenset({
    "wesnoth-1.16-music", "naev-data", "hedgewars-data", "drascula-music",
    "asterisk-core-sounds-en-g722", "asterisk-core-sounds-es-g722", "asterisk-prompt-it-menardi-wav"})
FIT_SEED = 0
DEFAULT_OUT_DIM = 32


@dataclass
class Clip:
    """A 10 s clip of one corpus file."""

    kind: str          # "music" or "dialogue"
    package: str
    source: str        # file path relative to the corpus
    start_s: float
    samples: np.ndarray


@dataclass
class Example:
    """A labelled 10 s clip of the benchmark."""

    label: str         # music | dialogue | both
    group: str         # source file(s): clips of one group are windows of one reference "track"
    packages: tuple    # source package(s)
    ratio_db: float    # music-to-speech power ratio of a *both* clip, nan otherwise
    samples: np.ndarray


def _read_segment(path: str, start_s: float, seconds: float, sr: int) -> np.ndarray:
    import soundfile as sf

    with sf.SoundFile(path) as f:
        f.seek(int(start_s * f.samplerate))
        data = f.read(int(round(seconds * f.samplerate)), dtype="float32", always_2d=True)
        file_sr = f.samplerate
    y = resample(to_mono(data), file_sr, sr)
    n = int(round(seconds * sr))
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _dbfs(y: np.ndarray) -> float:
    return 10.0 * np.log10(float(np.mean(np.asarray(y, np.float64) ** 2)) + 1e-12)


def load_clips(corpus: str = CORPUS, sr: int = 16000) -> list[Clip]:
    """Music clips at evenly spaced positions plus each track's last 10 s; consecutive speech clips per passage.

    Stored as float16 in the cache; fresh clips are rounded the same way, so a cached run equals a fresh one.
    """
    key = hashlib.sha1(f"{corpus}|{sr}|{MUSIC_CLIPS}|{SPEECH_CLIPS}|v1".encode()).hexdigest()[:12]
    cache = os.path.join(CACHE, f"clips_{key}.npz")
    if os.path.exists(cache):
        z = np.load(cache, allow_pickle=False)
        meta, audio = z["meta"], z["audio"]          # each z[...] access decodes the member again: once only
        return [Clip(str(k), str(p), str(s), float(t), audio[i].astype(np.float32))
                for i, (k, p, s, t) in enumerate(meta)]
    clips: list[Clip] = []
    with open(os.path.join(corpus, "manifest.csv"), newline="") as f:
        music = [r for r in csv.DictReader(f) if r["kind"] == "music"]
    for r in music:
        dur = float(r["duration_s"])
        if dur < CLIP_S:
            continue
        starts = [dur * (i + 1) / (MUSIC_CLIPS + 1) - CLIP_S / 2 for i in range(MUSIC_CLIPS - 1)] + [dur - CLIP_S]
        for s in sorted({max(0.0, round(s, 2)) for s in starts}):
            clips.append(Clip("music", r["source_package"], r["path"], s,
                              _read_segment(os.path.join(corpus, r["path"]), s, CLIP_S, sr)))
    with open(os.path.join(corpus, "speech_passages.csv"), newline="") as f:
        speech = list(csv.DictReader(f))
    for r in speech:
        n = min(SPEECH_CLIPS, int(float(r["duration_s"]) // CLIP_S))
        if n:
            y = _read_segment(os.path.join(corpus, r["path"]), 0.0, n * CLIP_S, sr)
            m = int(CLIP_S * sr)
            for i in range(n):
                clips.append(Clip("dialogue", r["source_package"], r["path"], i * CLIP_S, y[i * m:(i + 1) * m]))
    clips = [c for c in clips if _dbfs(c.samples) > SILENT_DBFS]
    os.makedirs(CACHE, exist_ok=True)
    np.savez(cache, audio=np.stack([c.samples for c in clips]).astype(np.float16),
             meta=np.array([(c.kind, c.package, c.source, str(c.start_s)) for c in clips]))
    return [Clip(c.kind, c.package, c.source, c.start_s, c.samples.astype(np.float16).astype(np.float32))
            for c in clips]


def make_examples(clips: list[Clip], rng: np.random.Generator) -> list[Example]:
    """Music and dialogue clips as they are, plus one *both* per dialogue clip: mixed over a music clip drawn
    from ``clips`` at a music-to-speech power ratio drawn uniformly from -12 to +6 dB."""
    out = [Example(c.kind, c.source, (c.package,), float("nan"), c.samples) for c in clips]
    music = [c for c in clips if c.kind == "music"]
    for c in clips:
        if c.kind != "dialogue" or not music:
            continue
        m = music[int(rng.integers(len(music)))]
        ratio = float(rng.uniform(-12.0, 6.0))
        out.append(Example("both", f"{c.source}+{m.source}", (c.package, m.package), ratio,
                           synth.mix_at_snr(m.samples, c.samples, ratio)))
    return out


def embed_examples(examples: list[Example], cfg: EmbeddingConfig) -> np.ndarray:
    """Raw embedding of every example, ``(n, embedding_dim)``."""
    return np.stack([embed(e.samples, cfg.sample_rate, cfg) for e in examples])


def balanced(examples: list[Example], seed: int, packages: frozenset[str] | None = None) -> np.ndarray:
    """Indices of the examples wholly from ``packages`` (None: any), as many of each class as the rarest class
    has (drawn with ``seed``), in input order."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        if packages is None or set(e.packages) <= packages:
            by_class.setdefault(e.label, []).append(i)
    n = min(len(v) for v in by_class.values())
    return np.sort(np.concatenate([rng.choice(v, n, replace=False) for _, v in sorted(by_class.items())]))


def fit_set(examples: list[Example], seed: int = FIT_SEED) -> np.ndarray:
    """Indices of the fit set: examples wholly from :data:`TUNING_PACKAGES`, balanced (:func:`balanced`), so no
    class dominates the scale or the principal axes."""
    return balanced(examples, seed, TUNING_PACKAGES)


def builtin_examples(examples: list[Example], vectors: np.ndarray, seed: int = FIT_SEED
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The class vote's built-in examples drawn from ``examples`` (their index ``vectors``, row by row): every
    package's, balanced (:func:`balanced`), as stored records (:func:`audioid.index.examples.to_records`), and
    the rows of ``vectors`` they hold, in record order."""
    rows = balanced(examples, seed)
    records, order = to_records(vectors[rows], [examples[i].label for i in rows], [examples[i].group for i in rows])
    return records, rows[order]


def tuning_examples(corpus: str = CORPUS, cfg: EmbeddingConfig = EmbeddingConfig(), seed: int = FIT_SEED
                    ) -> tuple[list[Example], np.ndarray]:
    """The fit set's examples and their raw vectors (mixes drawn among tuning clips only)."""
    clips = [c for c in load_clips(corpus, cfg.sample_rate) if c.package in TUNING_PACKAGES]
    examples = make_examples(clips, np.random.default_rng(seed))
    examples = [examples[i] for i in fit_set(examples, seed)]
    return examples, embed_examples(examples, cfg)


#: Largest change of an index vector (unit length), or of a discriminant coordinate (in standard deviations),
#: that ``--check`` puts down to float rounding.
_ROUNDING = 1e-4


def _rounding_only(moved: float, what: str) -> bool:
    """Whether a refit moving ``what`` by at most ``moved`` differs from the shipped fit by float rounding only."""
    print(f"the refit moves {what} by at most {moved:.1e}", file=sys.stderr)
    return moved < _ROUNDING


def _half_precision_moved(old: np.ndarray, vectors: np.ndarray) -> float:
    """How far float32 ``vectors`` (in record order) lie from the stored records ``old``, beyond the rounding to
    half precision that storing them costs (half a unit in the last place)."""
    stored = old["vector"]
    ulp = np.spacing(stored).astype(np.float32)
    return float(np.max(np.abs(stored.astype(np.float32) - vectors) - ulp / 2, initial=0.0))


def _shipped(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--out-dim", type=int, default=DEFAULT_OUT_DIM, help="principal axes kept (0: no projection)")
    ap.add_argument("--check", action="store_true", help="only report whether the shipped file would change")
    args = ap.parse_args(argv)
    cfg = EmbeddingConfig()
    examples, raw = tuning_examples(args.corpus, cfg)
    labels = np.array([e.label for e in examples])
    st = Standardizer.fit(raw, cfg, out_dim=args.out_dim or None)
    path = standardizer_path(cfg)
    shipped = _shipped(path)
    kept_shipped = False
    if shipped is not None:
        # Reordered float32 sums (another BLAS, a faster embedding) move the fit by rounding only: the shipped
        # transform stands (and stays byte for byte) when it maps the fit set to the same index vectors.
        old = Standardizer.from_dict(shipped["standardizer"])
        if old.out_dim == st.out_dim and _rounding_only(float(np.abs(old.transform(raw) - st.transform(raw)).max()),
                                                        "the fit set's index vectors"):
            st, kept_shipped = old, True
    vectors = st.transform(raw)
    disc = Discriminant.fit(vectors, labels)
    if kept_shipped and "discriminant" in shipped:
        old_disc = Discriminant.from_dict(shipped["discriminant"])
        if _rounding_only(float(np.abs(old_disc.coordinates(vectors) - disc.coordinates(vectors)).max()),
                          "their discriminant coordinates (standard deviations)"):
            disc = old_disc
    counts = {c: int(np.sum(labels == c)) for c in ("music", "dialogue", "both")}
    z = (raw - st.mean) / st.scale * st.weights
    kept = float(np.sum((z @ st.components.T) ** 2) / np.sum(z ** 2)) if st.components is not None else 1.0
    doc = {"config": cfg.to_dict(), "standardizer": shipped["standardizer"] if kept_shipped else st.to_dict(),
           "discriminant": disc.to_dict(),
           "fitted_on": {"script": "bench/fit_embedding_stats.py", "packages": sorted(TUNING_PACKAGES),
                         "clips": counts, "seed": FIT_SEED, "weighted_variance_kept": round(kept, 4)}}
    same = shipped == json.loads(json.dumps(doc))
    print(f"v{cfg.version}: {st.dim} -> {st.out_dim} dims, fitted on {counts}, weighted variance kept "
          f"{100 * kept:.1f} %; {'unchanged' if same else 'differs from the shipped file'}", file=sys.stderr)
    # The class vote's built-in examples (index.examples): clips of every package, through this transform.
    every = make_examples(load_clips(args.corpus, cfg.sample_rate), np.random.default_rng(FIT_SEED))
    every_vectors = st.transform(embed_examples(every, cfg))
    records, rows = builtin_examples(every, every_vectors)
    old_records = read_examples(examples_path(cfg))
    same_examples = (old_records is not None and old_records.dtype == records.dtype
                     and np.array_equal(old_records[["klass", "group"]], records[["klass", "group"]])
                     and _rounding_only(_half_precision_moved(old_records, every_vectors[rows]),
                                        "the built-in examples beyond half-precision rounding"))
    print(f"built-in examples: {len(records)} in {len(np.unique(records['group']))} groups; "
          f"{'unchanged' if same_examples else 'differ from the shipped file'}", file=sys.stderr)
    if args.check:
        return 0 if same and same_examples else 1
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not same:
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    if not same_examples:
        write_examples(examples_path(cfg), records)
        print(f"wrote {examples_path(cfg)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
