"""Music / dialogue / both classification with window embeddings and a FAISS kNN, on the real corpus.

10 s clips: *music* (excerpts and the outro of each music track), *dialogue* (speech passages), *both* (a speech
clip mixed over a music clip at a music-to-speech power ratio drawn from -12 to +6 dB).  Source packages are
split into folds; each fold's clips are classified against reference clips from the other folds' packages only,
so no test clip shares a package (composer, game, voice talent, recording chain) with any reference.  Every
fold's figures and the pooled ones are printed as markdown.

The classifier is what the index will run: raw vectors from :func:`audioid.fingerprint.embedding.embed`,
a :class:`Standardizer` fitted on the references, ``IndexFlatIP`` (cosine), a distance-weighted vote over the
``k`` nearest references, and abstention when the winner's share of the vote is below ``--min-share`` or the
nearest reference is farther than references of one package are from those of other packages (the 1st
percentile of cross-package nearest-neighbour similarity among the references, so no test data sets it).

Decoded clips are cached in ``~/.cache/ml-audio-id/bench/`` (never in the repository).

Usage::

    python bench/embedding_eval.py                       # 3 folds, package partition seed 0
    python bench/embedding_eval.py --partition-seed 1    # a second, different package partition
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from audioid import synth
from audioid.fingerprint.audio import resample, to_mono
from audioid.fingerprint.embedding import EmbeddingConfig, Standardizer, embed

CORPUS = os.path.expanduser("~/.cache/ml-audio-id/corpus")
CACHE = os.path.expanduser("~/.cache/ml-audio-id/bench")
CLASSES = ("music", "dialogue", "both")
CLIP_S = 10.0
SILENT_DBFS = -50.0   # clips quieter than this (fade-outs, gaps) hold no music or speech to classify


@dataclass
class Clip:
    kind: str          # "music" or "dialogue" (source material)
    package: str
    source: str        # file path relative to the corpus
    start_s: float
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


def load_clips(corpus: str, sr: int, music_clips: int, speech_clips: int) -> list[Clip]:
    """Music clips at evenly spaced positions plus each track's last 10 s; consecutive speech clips per passage."""
    key = hashlib.sha1(f"{corpus}|{sr}|{music_clips}|{speech_clips}|v1".encode()).hexdigest()[:12]
    cache = os.path.join(CACHE, f"embedding_eval_clips_{key}.npz")
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
        starts = [dur * (i + 1) / (music_clips + 1) - CLIP_S / 2 for i in range(music_clips - 1)] + [dur - CLIP_S]
        for s in sorted({max(0.0, round(s, 2)) for s in starts}):
            clips.append(Clip("music", r["source_package"], r["path"], s,
                              _read_segment(os.path.join(corpus, r["path"]), s, CLIP_S, sr)))
    with open(os.path.join(corpus, "speech_passages.csv"), newline="") as f:
        speech = list(csv.DictReader(f))
    for r in speech:
        n = min(speech_clips, int(float(r["duration_s"]) // CLIP_S))
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


def partition(packages: list[str], n_folds: int, seed: int) -> dict[str, int]:
    """Package -> fold, packages shuffled by ``seed`` then dealt round robin (seed 0: sorted order)."""
    order = sorted(packages)
    if seed:
        order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    return {p: i % n_folds for i, p in enumerate(order)}


def make_examples(clips: list[Clip], rng: np.random.Generator
                  ) -> list[tuple[str, str, str, np.ndarray, float]]:
    """(label, group, package key, samples, music-to-speech dB or nan): music and dialogue clips as they are,
    plus one *both* per dialogue clip, mixed over a music clip drawn from the same side of the split."""
    out = [(c.kind, c.source, c.package, c.samples, float("nan")) for c in clips]
    music = [c for c in clips if c.kind == "music"]
    for c in clips:
        if c.kind != "dialogue" or not music:
            continue
        m = music[int(rng.integers(len(music)))]
        ratio = float(rng.uniform(-12.0, 6.0))        # music-to-speech power ratio in dB
        mix = synth.mix_at_snr(m.samples, c.samples, ratio)
        out.append(("both", f"{c.source}+{m.source}", f"{c.package}+{m.package}", mix, ratio))
    return out


def knn_classify(index, refs_y: np.ndarray, q: np.ndarray, k: int, min_share: float, min_sim: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Distance-weighted kNN vote.  Returns (class index or -1 for abstain, winner's share of the vote)."""
    sims, ids = index.search(q, k)
    w = 1.0 / np.maximum(1.0 - sims, 1e-3)              # cosine distance -> weight
    votes = np.zeros((len(q), len(CLASSES)))
    for c in range(len(CLASSES)):
        votes[:, c] = (w * (refs_y[ids] == c)).sum(axis=1)
    share = votes.max(axis=1) / votes.sum(axis=1)
    pred = votes.argmax(axis=1)
    pred[(share < min_share) | (sims[:, 0] < min_sim)] = -1
    return pred, share


def far_threshold(index_vecs: np.ndarray, pkgs: np.ndarray, k: int = 50, pct: float = 1.0) -> float:
    """Similarity below which a query is "far": the ``pct`` percentile of each reference's nearest reference
    from another package (how near a new package's clips come to the rest)."""
    import faiss

    idx = faiss.IndexFlatIP(index_vecs.shape[1])
    idx.add(index_vecs)
    sims, ids = idx.search(index_vecs, k)
    other = pkgs[ids] != pkgs[:, None]
    best = np.where(other.any(axis=1), np.max(np.where(other, sims, -1.0), axis=1), np.nan)
    return float(np.nanpercentile(best, pct))


def f1_scores(y: np.ndarray, p: np.ndarray, n: int) -> np.ndarray:
    f1 = np.zeros(n)
    for c in range(n):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        f1[c] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return f1


def report(name: str, y: np.ndarray, p: np.ndarray) -> dict:
    ans = p >= 0
    ya, pa = y[ans], p[ans]
    yb, pb = (ya != 1).astype(int), (pa != 1).astype(int)     # music present (music or both) vs dialogue
    conf = np.zeros((3, 3), int)
    np.add.at(conf, (ya, pa), 1)
    return {"name": name, "n": len(y), "abstain": 1 - ans.mean(), "bin_acc": float(np.mean(yb == pb)),
            "bin_f1": float(f1_scores(yb, pb, 2).mean()), "acc3": float(np.mean(ya == pa)),
            "f1_3": float(f1_scores(ya, pa, 3).mean()), "conf": conf}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--partition-seed", type=int, default=0, help="package partition (0: sorted round robin)")
    ap.add_argument("--mix-seed", type=int, default=0, help="music partners and ratios of the 'both' clips")
    ap.add_argument("--music-clips", type=int, default=4, help="clips per music track (the last is the outro)")
    ap.add_argument("--speech-clips", type=int, default=3, help="consecutive clips per speech passage")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--min-share", type=float, default=0.5, help="abstain below this share of the vote")
    args = ap.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    cfg = EmbeddingConfig()
    t0 = time.perf_counter()
    clips = load_clips(args.corpus, cfg.sample_rate, args.music_clips, args.speech_clips)
    print(f"{len(clips)} clips loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    fold_of = {**partition(sorted({c.package for c in clips if c.kind == "music"}), args.folds, args.partition_seed),
               **partition(sorted({c.package for c in clips if c.kind == "dialogue"}), args.folds,
                           args.partition_seed)}
    rng = np.random.default_rng(args.mix_seed)
    # Mixes pair speech and music of the same fold, so a "both" clip's packages are all on one side of a split.
    examples = []
    for f in range(args.folds):
        for lab, grp, pkg, y, ratio in make_examples([c for c in clips if fold_of[c.package] == f], rng):
            examples.append((lab, grp, pkg, f, y, ratio))

    t_first = time.perf_counter()
    embed(examples[0][4], cfg.sample_rate, cfg)
    t_first = time.perf_counter() - t_first
    t0 = time.perf_counter()
    raw = np.stack([embed(e[4], cfg.sample_rate, cfg) for e in examples])
    t_embed = time.perf_counter() - t0
    speed = len(examples) * CLIP_S / t_embed
    labels = np.array([CLASSES.index(e[0]) for e in examples])
    folds = np.array([e[3] for e in examples])
    pkgs = np.array([e[2] for e in examples])

    rows = []
    preds = np.full(len(examples), -2)
    thresholds = []
    for f in range(args.folds):
        ref, test = folds != f, folds == f
        st = Standardizer.fit(raw[ref], cfg)
        rv, tv = st.transform(raw[ref]), st.transform(raw[test])
        min_sim = far_threshold(rv, pkgs[ref])
        thresholds.append(min_sim)
        index = faiss.IndexFlatIP(rv.shape[1])
        index.add(rv)
        p, _ = knn_classify(index, labels[ref], tv, args.k, args.min_share, min_sim)
        preds[test] = p
        test_pkgs = sorted({q for x in pkgs[test] for q in x.split("+")})
        rows.append(report(f"fold {f} ({', '.join(test_pkgs)})", labels[test], p))
    rows.append(report("**pooled**", labels, preds))

    counts = {c: int(np.sum(labels == i)) for i, c in enumerate(CLASSES)}
    print(f"## Music / dialogue / both: kNN over embeddings (config v{cfg.version}, dim {raw.shape[1]})\n")
    print(f"Clips: {counts}; {args.folds} folds by source package (partition seed {args.partition_seed}, "
          f"mix seed {args.mix_seed}); k={args.k}, abstain when vote share < {args.min_share} or nearest "
          f"similarity < far threshold ({', '.join(f'{t:.3f}' for t in thresholds)}).\n")
    print("| test fold | clips | binary acc | binary macro-F1 | 3-class acc | 3-class macro-F1 | abstained |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['n']} | {r['bin_acc']:.4f} | {r['bin_f1']:.4f} | {r['acc3']:.4f} | "
              f"{r['f1_3']:.4f} | {100 * r['abstain']:.1f} % |")
    conf = rows[-1]["conf"]
    print("\nPooled confusion matrix (answered clips; rows = truth, columns = prediction):\n")
    print("| truth \\ predicted | " + " | ".join(CLASSES) + " |")
    print("|---|" + "---|" * len(CLASSES))
    for i, c in enumerate(CLASSES):
        print(f"| {c} | " + " | ".join(str(v) for v in conf[i]) + " |")
    ratios = np.array([e[5] for e in examples])
    print("\n*both* clips by music-to-speech ratio: share predicted both / music / dialogue / abstained:\n")
    print("| ratio (dB) | clips | both | music | dialogue | abstained |")
    print("|---|---|---|---|---|---|")
    for lo in range(-12, 6, 3):
        sel = (labels == 2) & (ratios >= lo) & (ratios < lo + 3)
        share = [np.mean(preds[sel] == c) for c in (2, 0, 1, -1)]
        print(f"| {lo:+d} to {lo + 3:+d} | {int(sel.sum())} | " + " | ".join(f"{100 * v:.0f} %" for v in share) + " |")
    print(f"\nEmbedding speed: {speed:.0f}x real time on one core ({1000 * t_embed / len(examples):.1f} ms per 10 s "
          f"clip, {len(examples)} clips); first call in this process {1000 * t_first:.0f} ms (filter set-up).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
