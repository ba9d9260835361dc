"""Generate standard multiway-cut instances (DIMACS2 text, the format of ``tools/dimacs2graph.py``).

    python tools/make_mwc_instances.py OUT --nodes 160 320 640 --terminals 20 40 80 --seeds 0 1
    python tools/bench_cut.py OUT                       # our solver, the textbook IP, alpha-expansion

The family: sparse connected graphs of N nodes, K of them terminals, about ``--edges-per-node`` edges per node,
small integer weights between two ordinary nodes and heavy integer weights on the edges at a terminal
(the shape of the classical benchmark sets: a terminal is an ordinary node with a few expensive edges).
M is about ``--edges-per-node`` × N, so a node has about twice that many neighbours.
Topologies: ``random`` (a random spanning tree plus uniform random edges), ``geometric`` (points in the
unit square, each joined to its nearest neighbours, plus a spanning tree so it is connected), ``grid``
(a 4-connected grid, 2 edges per node; ``--edges-per-node`` ignored). Everything is drawn from
``numpy.random.default_rng``, so a (size, seed) pair always gives the same file. One file per (nodes, terminals, seed):
``OUT/mwc_N<nodes>_K<terminals>_<topology>_s<seed>.gr`` and ``OUT/instances.json`` listing them with
their parameters. A combination with K >= N is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liid.atomic import atomic_dir, check_output  # noqa: E402
from liid.errors import LiidError  # noqa: E402


def _random_tree(rng: np.random.Generator, n: int) -> np.ndarray:
    """A uniform random recursive tree: node i joins a random earlier node (connected, n-1 edges)."""
    order = rng.permutation(n)
    parent = order[(rng.random(n - 1) * np.arange(1, n)).astype(np.int64)]
    return np.stack([order[1:], parent], axis=1)


def _edges(rng: np.random.Generator, n: int, per_node: float, topology: str) -> np.ndarray:
    """Undirected simple edges [M, 2] (u < v) of a connected graph with M about ``per_node`` × n."""
    if topology == "grid":
        side = int(np.ceil(np.sqrt(n)))
        idx = np.arange(n)
        c = idx % side
        right = idx[(c + 1 < side) & (idx + 1 < n)]
        down = idx[idx + side < n]
        pairs = np.concatenate([np.stack([right, right + 1], 1), np.stack([down, down + side], 1)])
    else:
        target = max(int(round(per_node * n)), n - 1)
        if topology == "geometric":
            pts = rng.random((n, 2))
            d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
            tree = np.stack(minimum_spanning_tree(d + 1e-12).nonzero(), 1)  # Euclidean MST: connected
            k = max(int(round(per_node)), 1)
            while True:  # nearest neighbours, k growing until there are enough distinct pairs
                _, nb = cKDTree(pts).query(pts, k=min(k + 1, n))
                near = np.stack([np.repeat(np.arange(n), nb.shape[1] - 1), nb[:, 1:].ravel()], 1)
                near = np.unique(np.sort(near, axis=1), axis=0)
                if len(near) >= target or k + 1 >= n:
                    break
                k += 1
            near = near[rng.permutation(len(near))]  # the tree first, then random near pairs
            pairs = np.concatenate([tree, near])
        elif topology == "random":
            tree = _random_tree(rng, n)
            extra = rng.integers(0, n, size=(2 * target, 2))
            pairs = np.concatenate([tree, extra])
        else:
            raise LiidError(f"unknown topology {topology!r} (random, geometric, grid)")
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        pairs = np.sort(pairs, axis=1)
        _, first = np.unique(pairs[:, 0] * n + pairs[:, 1], return_index=True)
        pairs = pairs[np.sort(first)][:target]  # the spanning tree comes first, so it is always kept
    pairs = np.sort(pairs, axis=1)
    _, first = np.unique(pairs[:, 0] * n + pairs[:, 1], return_index=True)
    return pairs[np.sort(first)]


def make_instance(nodes: int, terminals: int, seed: int, per_node: float = 4.0, topology: str = "random",
                  weight: tuple[int, int] = (1, 10), terminal_weight: tuple[int, int] = (20, 100)
                  ) -> tuple[list[int], np.ndarray]:
    """One instance: terminal node ids and ``[M, 3]`` rows ``u, v, w`` (integers)."""
    if terminals < 2 or terminals >= nodes:
        raise LiidError(f"need 2 <= terminals < nodes, got {terminals} terminals for {nodes} nodes")
    rng = np.random.default_rng([nodes, terminals, seed])
    pairs = _edges(rng, nodes, per_node, topology)
    term = np.sort(rng.choice(nodes, size=terminals, replace=False))
    is_t = np.zeros(nodes, dtype=bool)
    is_t[term] = True
    at_t = is_t[pairs[:, 0]] | is_t[pairs[:, 1]]
    w = rng.integers(weight[0], weight[1] + 1, size=len(pairs))
    w[at_t] = rng.integers(terminal_weight[0], terminal_weight[1] + 1, size=int(at_t.sum()))
    return term.tolist(), np.concatenate([pairs, w[:, None]], axis=1)


def dimacs_text(nodes: int, terminals: list[int], rows: np.ndarray, comment: str) -> str:
    lines = [f"c {comment}", "DIMACS2", " ".join(map(str, [len(terminals), *terminals])),
             f"p edge {nodes} {len(rows)}"]
    lines += [f"e {u} {v} {w}" for u, v, w in rows.tolist()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder to write (must not exist unless --overwrite)")
    ap.add_argument("--nodes", type=int, nargs="+", default=[160, 320, 640], help="N, one size per value")
    ap.add_argument("--terminals", type=int, nargs="+", default=[20, 40, 80],
                    help="K for each N (one value: the same K for every N)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--edges-per-node", type=float, default=4.0,
                    help="edges M / nodes N (random, geometric); a node then has about twice that many neighbours")
    ap.add_argument("--topology", default="random", choices=["random", "geometric", "grid"])
    ap.add_argument("--weight", type=int, nargs=2, default=[1, 10], metavar=("LO", "HI"),
                    help="integer weights between ordinary nodes, uniform in [LO, HI]")
    ap.add_argument("--terminal-weight", type=int, nargs=2, default=[20, 100], metavar=("LO", "HI"),
                    help="integer weights of the edges at a terminal, uniform in [LO, HI]")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    try:
        if len(a.terminals) not in (1, len(a.nodes)):
            raise LiidError(f"--terminals: give 1 value or one per --nodes value ({len(a.nodes)})")
        ks = a.terminals * len(a.nodes) if len(a.terminals) == 1 else a.terminals
        for lo, hi, name in ((*a.weight, "--weight"), (*a.terminal_weight, "--terminal-weight")):
            if not 0 <= lo <= hi:
                raise LiidError(f"{name}: need 0 <= LO <= HI, got {lo} {hi}")
        if any(x < 0 for x in a.seeds):
            raise LiidError(f"--seeds: need integers >= 0, got {' '.join(map(str, a.seeds))}")
        if a.edges_per_node < 1:
            raise LiidError(f"--edges-per-node: need >= 1, got {a.edges_per_node}")
        check_output(a.out, overwrite=a.overwrite)
        listing = []
        with atomic_dir(a.out, overwrite=a.overwrite) as tmp:
            for n, k in zip(a.nodes, ks, strict=True):
                for s in a.seeds:
                    term, rows = make_instance(n, k, s, a.edges_per_node, a.topology, tuple(a.weight),
                                               tuple(a.terminal_weight))
                    name = f"mwc_N{n}_K{k}_{a.topology}_s{s}.gr"
                    params = dict(nodes=n, terminals=k, seed=s, edges_per_node=a.edges_per_node, topology=a.topology,
                                  weight=a.weight, terminal_weight=a.terminal_weight)
                    (tmp / name).write_text(dimacs_text(n, term, rows, json.dumps(params)))
                    listing.append({"file": name, **params, "edges": len(rows)})
            (tmp / "instances.json").write_text(json.dumps({"format": "liid.mwc-instances",
                                                            "instances": listing}, indent=1) + "\n")
    except LiidError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{n}x{k}" for n, k in zip(a.nodes, ks, strict=True))
    print(f"wrote {a.out}: {len(listing)} instances ({sizes}, "
          f"seeds {' '.join(map(str, a.seeds))}, {a.topology})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
