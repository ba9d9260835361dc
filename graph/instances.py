"""Standard multiway-cut instances (terminals are ordinary nodes) as a ``CutGraph``.

An edge node-terminal t becomes a terminal weight of label t; an edge between two terminals is always
cut, so it goes into the constant ``offset``; parallel edges add up; self-loops are ignored. The graph's
objective then equals the instance's cut value, and every node may take every label.

``read_dimacs`` reads the text format of ``tools/dimacs2graph.py``::

    c any comment line (skipped, as are blank lines)
    DIMACS2
    K t1 ... tK          # number of terminals, then their node ids
    p edge N M           # N nodes (ids 0..N-1), M edges
    e u v w              # M lines: undirected edge u-v of weight w >= 0
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from liid.errors import LiidError
from liid.graph.graph_file import CutGraph


def from_terminal_edges(num_nodes: int, terminals: list[int], edges: np.ndarray, where: str = "instance"
                        ) -> tuple[CutGraph, np.ndarray]:
    """Convert; returns the graph and ``node_ids`` (original id of each graph node)."""
    edges = np.asarray(edges, dtype=np.float64).reshape(-1, 3)
    term = np.asarray(terminals, dtype=np.int64)
    if len(set(term.tolist())) != len(term):
        raise LiidError(f"{where}: repeated terminal ids")
    if term.size < 2:
        raise LiidError(f"{where}: a multiway cut needs at least 2 terminals, got {term.size}")
    if (term < 0).any() or (term >= num_nodes).any():
        raise LiidError(f"{where}: terminal id out of range [0, {num_nodes})")
    u, v, w = edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64), edges[:, 2]
    if len(edges) and (min(u.min(), v.min()) < 0 or max(u.max(), v.max()) >= num_nodes):
        raise LiidError(f"{where}: edge endpoint out of range [0, {num_nodes})")
    if not np.isfinite(w).all() or (w < 0).any():
        raise LiidError(f"{where}: edge weights must be finite and >= 0")
    keep = u != v  # self-loops are ignored
    u, v, w = u[keep], v[keep], w[keep]
    tlabel = np.full(num_nodes, -1, dtype=np.int64)
    tlabel[term] = np.arange(term.size)
    node_ids = np.nonzero(tlabel < 0)[0]
    local = np.full(num_nodes, -1, dtype=np.int64)
    local[node_ids] = np.arange(node_ids.size)
    K = term.size
    tu, tv = tlabel[u] >= 0, tlabel[v] >= 0
    offset = float(w[tu & tv].sum())
    terminal = np.zeros((node_ids.size, K), dtype=np.float64)
    m = tu & ~tv
    np.add.at(terminal, (local[v[m]], tlabel[u[m]]), w[m])
    m = tv & ~tu
    np.add.at(terminal, (local[u[m]], tlabel[v[m]]), w[m])
    m = ~tu & ~tv
    a, b = local[u[m]], local[v[m]]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * max(node_ids.size, 1) + hi
    uniq, inv = np.unique(key, return_inverse=True)
    weights = np.bincount(inv, weights=w[m], minlength=uniq.size)  # parallel edges add up
    pairs = np.stack([uniq // max(node_ids.size, 1), uniq % max(node_ids.size, 1)], axis=1)
    nz = weights > 0
    g = CutGraph(terminal=terminal, allowed=np.ones_like(terminal, dtype=bool), edges=pairs[nz],
                 weights=weights[nz], classes=[f"t{t}" for t in term.tolist()], offset=offset)
    if node_ids.size == 0:
        raise LiidError(f"{where}: the instance has no non-terminal nodes")
    return g.with_components(), node_ids


def read_dimacs(path: str | os.PathLike) -> tuple[int, list[int], np.ndarray]:
    """Read a DIMACS2 multiway-cut file; returns ``(num_nodes, terminals, edges)`` with ``edges`` a
    float64 ``[M, 3]`` array of ``u, v, w`` rows as in the file (self-loops and parallel edges kept:
    ``from_terminal_edges`` drops and sums them). Any defect is a LiidError ``<file>:<line>: <what>``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LiidError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LiidError(f"{path}: cannot read ({e})") from None

    def fail(lineno: int, what: str):
        raise LiidError(f"{path}:{lineno}: {what}")

    def integer(tok: str, lineno: int, what: str) -> int:
        try:
            return int(tok)
        except ValueError:
            fail(lineno, f"{what} {tok!r} is not an integer")

    state = "header"  # header -> terminals -> problem -> edges
    num_nodes, declared, p_line, t_line = 0, 0, 0, 0
    terminals: list[int] = []
    rows: list[tuple[int, int, float]] = []
    lineno = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        tok = line.split()
        if not tok or tok[0].startswith("c"):
            continue
        if state == "header":
            if tok != ["DIMACS2"]:
                fail(lineno, f"expected the header line 'DIMACS2', got {line.strip()[:40]!r}")
            state = "terminals"
        elif state == "terminals":
            k = integer(tok[0], lineno, "terminal count")
            if k < 2:
                fail(lineno, f"a multiway cut needs at least 2 terminals, got K={k}")
            if len(tok) - 1 != k:
                fail(lineno, f"K={k} terminals declared but {len(tok) - 1} terminal ids given")
            terminals = [integer(t, lineno, "terminal id") for t in tok[1:]]
            if len(set(terminals)) != k:
                fail(lineno, "repeated terminal ids")
            state, t_line = "problem", lineno
        elif state == "problem":
            if len(tok) != 4 or tok[:2] != ["p", "edge"]:
                fail(lineno, f"expected 'p edge N M', got {line.strip()[:40]!r}")
            num_nodes = integer(tok[2], lineno, "node count N")
            declared = integer(tok[3], lineno, "edge count M")
            if num_nodes < 1 or declared < 0:
                fail(lineno, f"bad sizes N={num_nodes} M={declared}")
            for t in terminals:
                if not 0 <= t < num_nodes:
                    fail(t_line, f"terminal id {t} out of range [0, {num_nodes})")
            state, p_line = "edges", lineno
        else:
            if tok[0] != "e":
                fail(lineno, f"expected an edge line 'e u v w', got {line.strip()[:40]!r}")
            if len(tok) != 4:
                fail(lineno, f"an edge line has 3 fields 'e u v w', got {len(tok) - 1}")
            u = integer(tok[1], lineno, "node id")
            v = integer(tok[2], lineno, "node id")
            try:
                w = float(tok[3])
            except ValueError:
                fail(lineno, f"weight {tok[3]!r} is not a number")
            for x in (u, v):
                if not 0 <= x < num_nodes:
                    fail(lineno, f"node id {x} out of range [0, {num_nodes})")
            if not math.isfinite(w) or w < 0:
                fail(lineno, f"weight {tok[3]} must be finite and >= 0")
            rows.append((u, v, w))
    if state != "edges":
        missing = {"header": "the 'DIMACS2' header", "terminals": "the terminal line 'K t1 ... tK'",
                   "problem": "the problem line 'p edge N M'"}[state]
        fail(max(lineno, 1), f"file ends before {missing}")
    if len(rows) != declared:
        fail(p_line, f"declares M={declared} edges but the file has {len(rows)} edge lines")
    return num_nodes, terminals, np.array(rows, dtype=np.float64).reshape(-1, 3)
