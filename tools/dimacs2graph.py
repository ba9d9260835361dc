"""Convert a standard multiway-cut instance (DIMACS2 text) into a graph directory for `liid solve-cut`.

    python tools/dimacs2graph.py IN.gr OUT [--overwrite]
    liid solve-cut --graph OUT --out CUT      # CUT/summary.json "objective" = the instance's cut value

Input format (0-based node ids, undirected edges; blank lines and lines starting with 'c' are skipped):
    DIMACS2
    K t1 ... tK          number of terminals, then their node ids
    p edge N M           N nodes, M edge lines follow
    e u v w              edge u-v with weight w >= 0 (parallel edges add up, self-loops are ignored)

The terminals become labels t<id> (in the order given); a node-terminal edge becomes a terminal weight,
a terminal-terminal edge (always cut) a constant offset of the objective. Graph node i is the i-th
non-terminal node id in increasing order. A defect in the file is one line `error: FILE:LINE: what` on
stderr, exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from liid.atomic import check_output
from liid.errors import LiidError
from liid.graph.graph_file import save_graph
from liid.graph.instances import from_terminal_edges, read_dimacs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", metavar="IN.gr", help="DIMACS2 multiway-cut instance")
    ap.add_argument("out", metavar="OUT", help="graph directory to write (must not exist)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    a = ap.parse_args(argv)
    src = Path(a.input)
    try:
        check_output(a.out, overwrite=a.overwrite)
        num_nodes, terminals, edges = read_dimacs(src)
        g, node_ids = from_terminal_edges(num_nodes, terminals, edges, where=str(src))
        g.meta.update(source={"dimacs": str(src.resolve())},
                      dimacs={"file": str(src.resolve()), "nodes": num_nodes, "edges_read": len(edges),
                              "terminals": terminals,
                              "graph_nodes": "the non-terminal node ids in increasing order"})
        save_graph(a.out, g, overwrite=a.overwrite)
    except LiidError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}: {g.num_nodes:,} nodes, {len(g.edges):,} edges, {len(terminals)} terminals, "
          f"{g.num_components:,} components, offset {g.offset:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
