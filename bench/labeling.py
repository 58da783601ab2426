"""Labelling effort vs accuracy: HCGL (``--mode guided``) against uncertain and random one-by-one labelling.

An oracle annotator labels a pool of real 10 s clips (``bench/fit_embedding_stats.py``'s music, dialogue, and
dialogue-over-music *both* clips).  Source packages are split into folds as in ``bench/classify.py``: one fold is
the held-out gold set, the others the pool, so no gold clip shares a package with a pool clip.  After every few
clips listened to, the index's classifier (FAISS ``Flat`` over the labelled pool clips, the product's
``index.classify.classify`` vote) classifies the gold set; accuracy counts abstentions as errors.  "Full
labelling" is the same classifier with every pool clip labelled correctly.

* guided: :meth:`audioid.index.hcgl.GuidedQueue.for_pool` (the hierarchy over the pool's coordinates on the
  shipped discriminant axes, fitted on the transform's fit set).  The oracle hears the group's medoid and its
  diverse members (each counts as a clip listened to); when all agree it labels the whole group with that class,
  otherwise it answers "mixed" (the group splits).  Group-labelled clips that the kNN vote over heard clips
  disputes are heard again when the queue ranks that first (reviews).  Group-label noise is the share of
  labelled clips whose label is wrong.
* uncertain: one clip at a time, lowest kNN vote share first (:func:`audioid.index.hcgl.uncertain_order`).
* random: one clip at a time in random order.

"Clips to 95 % of full" is where a mode's accuracy, averaged over its orders, first reaches 95 % of full
labelling: what the mode needs for that accuracy in expectation.  The mean of each order's own first crossing is
printed too; it is lower, as an order can touch 95 % by luck and fall back.

Usage::

    OPENBLAS_NUM_THREADS=1 python bench/labeling.py [--partitions 0,1,2] [--plot bench/labeling.png]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from typing import NamedTuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from classify import fold_examples, vote, window_ids  # noqa: E402
from fit_embedding_stats import CORPUS, embed_examples, load_clips  # noqa: E402

from audioid.fingerprint.embedding import EmbeddingConfig, default_standardizer  # noqa: E402
from audioid.index.classify import CLASSES, ClassifyConfig  # noqa: E402
from audioid.fingerprint.discriminant import default_discriminant  # noqa: E402
from audioid.index.hcgl import GuidedQueue, HcglConfig, KnnState, build_hierarchy, uncertain_order  # noqa: E402
from audioid.index.vectors import VectorSegment, build_faiss, track_of  # noqa: E402

MODES = ("guided", "uncertain", "random")


class Row(NamedTuple):
    """One mode on one pool/gold split."""

    partition: int
    gold_fold: int
    pool: int
    gold: int
    full: float                 # accuracy of full labelling
    mode: str
    reach: int | None           # clips to 95 % of full on the mean accuracy curve
    first: list                 # each order's first crossing (None: never)
    at10: float                 # accuracy at 10 % of the pool, mean over orders
    noise10: float              # label noise at 10 % of the pool, mean over orders
    build_s: float              # hierarchy build of the pool


class Gold:
    """The held-out gold set and the product's classifier over a set of labelled pool clips."""

    def __init__(self, vecs: np.ndarray, truth: np.ndarray, pool_vecs: np.ndarray, pool_ids: np.ndarray):
        self.vecs, self.truth = vecs, truth
        self.pool_vecs, self.pool_ids = pool_vecs, pool_ids
        self.cfg = ClassifyConfig()

    def accuracy(self, labels: np.ndarray) -> float:
        """3-class accuracy on the gold set (abstentions wrong) with the pool clips labelled ``labels`` (-1: none)."""
        lab = labels >= 0
        if not lab.any():
            return 0.0
        seg = VectorSegment("pool", build_faiss(self.pool_vecs[lab], self.pool_ids[lab], "Flat"))
        class_of = dict(zip(track_of(self.pool_ids[lab]).tolist(), [CLASSES[c] for c in labels[lab]]))
        return float(np.mean(np.array(vote([seg], self.vecs, class_of, self.cfg)) == self.truth))


def simulate(mode: str, vecs: np.ndarray, truth: np.ndarray, gold: Gold, budget: int, step: int, seed: int,
             cfg: HcglConfig, queue: GuidedQueue | None = None) -> list[tuple[int, float, float]]:
    """(clips listened to, gold accuracy, label noise) after every ``step`` clips, up to ``budget`` clips."""
    rng = np.random.default_rng(seed)
    n = len(vecs)
    labels = np.full(n, -1, np.int64)
    grouped = np.zeros(n, bool)
    knn = KnnState(np.ascontiguousarray(vecs, np.float32), cfg.k, cfg.sharpness)
    random_order = iter(rng.permutation(n))
    effort, next_eval, curve = 0, 0, []

    def record() -> None:
        lab = labels >= 0
        noise = float(np.mean(labels[lab] != truth[lab])) if lab.any() else 0.0
        curve.append((effort, gold.accuracy(labels), noise))

    while effort < budget:
        if effort >= next_eval:
            record()
            next_eval += step
        if mode == "guided":
            q = queue.next(labels, grouped, np.zeros(n, bool), set())
            if q is None:
                break
            if q.clip < 0:             # the group's checks agree: one answer labels the rest of it
                todo = q.members[labels[q.members] < 0]
                labels[todo], grouped[todo] = q.klass, True
                continue
            i = q.clip
        elif mode == "random":
            i = next(random_order, None)
        else:
            i = uncertain_order(knn, labels, labels >= 0, rng)
        if i is None:
            break
        effort += 1
        labels[i], grouped[i] = truth[i], False      # heard (a guided review replaces a group label)
    # The last answers count too: group answers given after the last evaluation change the labels without
    # costing effort (a guided queue may label the rest of the pool that way and run out).
    record()
    return curve


def clips_to_reach(curve: list[tuple[int, float, float]], target: float) -> int | None:
    """Clips listened to when gold accuracy first reaches ``target`` (None: never within the budget)."""
    return next((e for e, acc, _ in curve if acc >= target), None)


def mean_curve(runs: list[list[tuple[int, float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clips listened to, gold accuracy and label noise averaged over ``runs`` (orders evaluated at the same
    efforts), as far as every run goes."""
    m = min(len(c) for c in runs)
    a = np.array([c[:m] for c in runs], dtype=np.float64)          # (runs, m, 3)
    return a[0, :, 0].astype(int), a[:, :, 1].mean(axis=0), a[:, :, 2].mean(axis=0)


def mean_clips_to_reach(runs: list[list[tuple[int, float, float]]], target: float) -> int | None:
    """Clips listened to when the gold accuracy averaged over ``runs`` first reaches ``target``: the clips a mode
    needs for that accuracy in expectation.  (The mean of each order's first crossing is lower: an order can
    touch ``target`` by luck and fall back.)"""
    effort, acc, _ = mean_curve(runs)
    return next((int(e) for e, a in zip(effort, acc) if a >= target), None)


def hierarchy_timing(n: int, dim: int, cfg: HcglConfig) -> float:
    """Seconds to build the hierarchy of ``n`` random unit vectors (the micro-cluster path at 30,000)."""
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t0 = time.perf_counter()
    build_hierarchy(x, cfg)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--partitions", default="0", help="comma-separated package-partition seeds")
    ap.add_argument("--budget", type=float, default=0.4, help="clips listened to, as a share of the pool")
    ap.add_argument("--step", type=int, default=10, help="clips between two evaluations")
    ap.add_argument("--seeds", type=int, default=10, help="orders averaged for random and uncertain")
    ap.add_argument("--checks", type=float, default=HcglConfig.checks,
                    help="diverse members heard per doubling of a group's size")
    ap.add_argument("--max-points", type=int, default=HcglConfig.max_points,
                    help="pools larger than this are micro-clustered first (set low to exercise that path)")
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "labeling.png"))
    ap.add_argument("--scale-n", type=int, default=30000, help="pool size of the hierarchy build timing (0: skip)")
    args = ap.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    cfg = replace(HcglConfig(), checks=args.checks, max_points=args.max_points)
    ecfg = EmbeddingConfig()
    clips = load_clips(args.corpus, ecfg.sample_rate)
    print(f"## Labelling effort (HCGL {cfg})\n")
    rows, curves = [], {}
    for pseed in (int(s) for s in args.partitions.split(",")):
        examples, folds = fold_examples(clips, args.folds, pseed, 0)
        vecs = default_standardizer(ecfg).transform(embed_examples(examples, ecfg))
        truth = np.array([CLASSES.index(e.label) for e in examples])
        ids = window_ids(examples)
        for gold_fold in range(args.folds):
            g, p = folds == gold_fold, folds != gold_fold
            gold = Gold(vecs[g], np.array(CLASSES, object)[truth[g]], vecs[p], ids[p])
            n = int(p.sum())
            full = gold.accuracy(truth[p])
            budget, t0 = int(args.budget * n), time.perf_counter()
            queue = GuidedQueue.for_pool(vecs[p], default_discriminant(ecfg), cfg)
            build_s = time.perf_counter() - t0
            res = {"guided": [simulate("guided", vecs[p], truth[p], gold, budget, args.step, 0, cfg, queue)]}
            for mode in ("uncertain", "random"):
                res[mode] = [simulate(mode, vecs[p], truth[p], gold, budget, args.step, s, cfg)
                             for s in range(args.seeds)]
            curves[(pseed, gold_fold)] = (n, full, res)
            for mode, runs in res.items():
                reach = mean_clips_to_reach(runs, 0.95 * full)
                first = [clips_to_reach(c, 0.95 * full) for c in runs]
                at10 = [next((a for e, a, _ in reversed(c) if e <= 0.1 * n), 0.0) for c in runs]
                noise10 = [next((z for e, _, z in reversed(c) if e <= 0.1 * n), 0.0) for c in runs]
                rows.append(Row(pseed, gold_fold, n, int(g.sum()), full, mode, reach, first, float(np.mean(at10)),
                                float(np.mean(noise10)), build_s))
    print(f"Clips to 95 % of full: where the accuracy averaged over the orders ({args.seeds} for uncertain and "
          "random, one for guided) first reaches it; then the mean of each order's first crossing.\n")
    print("| partition | gold fold | pool | gold | full-labelling acc | mode | clips to 95 % of full "
          "(% of pool) | mean first crossing | acc at 10 % of pool | label noise at 10 % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        shown = f"{r.reach} ({100 * r.reach / r.pool:.1f} %)" if r.reach is not None else \
            f"not within {int(args.budget * 100)} %"
        got = [v for v in r.first if v is not None]
        crossing = f"{np.mean(got):.0f}" if len(got) == len(r.first) else f"{len(r.first) - len(got)} never"
        print(f"| {r.partition} | {r.gold_fold} | {r.pool} | {r.gold} | {r.full:.4f} | {r.mode} | {shown} "
              f"| {crossing} | {r.at10:.4f} | {100 * r.noise10:.2f} % |")
    print("\nRatio of clips to reach 95 % of full accuracy, random / guided (mean accuracy curve; mean of the "
          "first crossings):\n")
    for key in curves:
        row = {r.mode: r for r in rows if (r.partition, r.gold_fold) == key}
        g, rnd = row["guided"].reach, row["random"].reach
        firsts = row["random"].first
        ratio = f"{rnd / g:.1f}x" if g and rnd else "n/a"
        # Only when every order got there: a mean over the lucky ones alone would flatter random.
        ratio_first = f"{np.mean(firsts) / g:.1f}x" if g and None not in firsts else "n/a"
        print(f"- partition {key[0]}, gold fold {key[1]}: {ratio}; {ratio_first}")
    print(f"\nHierarchy build of the pool: {np.mean([r.build_s for r in rows]):.2f} s (mean).")
    if args.scale_n:
        dim = default_discriminant(ecfg).axes.shape[1] + 1          # guided_space's vectors
        print(f"Hierarchy build of {args.scale_n} random {dim}-dim vectors (micro-clusters): "
              f"{hierarchy_timing(args.scale_n, dim, cfg):.1f} s.")
    try:
        import matplotlib  # noqa: F401  (only the plot needs it; it is no dependency of the package)
    except ImportError:
        print("\nNo plot: matplotlib is not installed (pip install matplotlib).")
        return 0
    plot(curves, args.plot)
    print(f"\nPlot: {args.plot}")
    return 0


def plot(curves: dict, path: str) -> None:
    """Gold accuracy and label noise vs share of the pool listened to, one panel per (partition, gold fold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(curves), figsize=(5 * len(curves), 7), squeeze=False, sharex=True)
    colours = {"guided": "tab:green", "uncertain": "tab:orange", "random": "tab:blue"}
    for col, ((pseed, gf), (n, full, res)) in enumerate(curves.items()):
        ax, nx = axes[0, col], axes[1, col]
        for mode, runs in res.items():
            effort, acc, noise = mean_curve(runs)
            ax.plot(effort / n * 100, acc, label=mode, color=colours[mode])
            nx.plot(effort / n * 100, 100 * noise, label=mode, color=colours[mode])
        ax.axhline(full, color="grey", lw=0.8, label="full labelling")
        ax.axhline(0.95 * full, color="grey", ls="--", lw=0.8, label="95 % of full")
        ax.axvline(10, color="black", ls=":", lw=0.8)
        ax.set_title(f"partition {pseed}, gold fold {gf} (pool {n})")
        ax.set_ylabel("gold accuracy (3 classes)")
        ax.set_ylim(0.4, 1.0)
        nx.axhline(3, color="red", ls="--", lw=0.8)
        nx.set_xlabel("clips listened to (% of pool)")
        nx.set_ylabel("label noise (%)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    sys.exit(main())
