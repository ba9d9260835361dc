"""Solve a ``graph.ckr.LinearProgram`` with HiGHS (dual simplex for the LP, branch-and-cut for the MIP)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np

from liid.graph.ckr import LinearProgram


@dataclass
class SolveResult:
    status: str  # "optimal" | "time_limit" | "infeasible" | other HiGHS status text
    x: np.ndarray | None
    objective: float  # incumbent objective (inf if none)
    bound: float  # proven lower bound (the LP value for an LP; the dual bound for a MIP)
    seconds: float
    row_dual: np.ndarray | None = None  # an LP's row duals y (reduced cost c - A^T y), when optimal


def _highs(time_limit: float) -> highspy.Highs:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(max(time_limit, 1e-3)))
    h.setOptionValue("threads", 1)  # processes parallelise over components; one thread keeps runs identical
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 1e-9)
    h.setOptionValue("solver", "simplex")  # a vertex solution: integral whenever an integral optimum is a vertex
    return h


def solve(lp: LinearProgram, integer: bool = False, time_limit: float = 60.0,
          start: np.ndarray | None = None) -> SolveResult:
    """Solve the LP (or the MIP with x_uk binary); arrays in, arrays out. ``start``: a feasible column
    vector (``LinearProgram.vector``) handed to branch-and-bound as its first incumbent."""
    t0 = time.perf_counter()
    h = _highs(time_limit)
    A = lp.A.tocsc()
    num_col, num_row = A.shape[1], A.shape[0]
    inf = highspy.kHighsInf
    integrality = np.zeros(num_col, dtype=np.int32)
    if integer:
        integrality[: lp.num_x] = 1
    h.passModel(num_col, num_row, int(A.nnz), 1, 1, float(lp.const), lp.c.astype(np.float64),
                lp.col_lo.astype(np.float64), np.where(np.isinf(lp.col_hi), inf, lp.col_hi),
                lp.row_lo.astype(np.float64), np.where(np.isinf(lp.row_hi), inf, lp.row_hi),
                A.indptr.astype(np.int32), A.indices.astype(np.int32), A.data.astype(np.float64),
                integrality)
    if integer and start is not None:
        sol0 = highspy.HighsSolution()
        sol0.col_value = np.asarray(start, dtype=np.float64).tolist()
        sol0.value_valid = True
        h.setSolution(sol0)
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    sol = h.getSolution()
    x = np.asarray(sol.col_value, dtype=np.float64) if sol.value_valid else None
    name = {highspy.HighsModelStatus.kOptimal: "optimal",
            highspy.HighsModelStatus.kTimeLimit: "time_limit"}.get(status, h.modelStatusToString(status))
    obj = float(info.objective_function_value) if x is not None else float("inf")
    if integer:
        bound = float(info.mip_dual_bound)
    else:
        bound = obj if name == "optimal" else float("-inf")
    row_dual = np.asarray(sol.row_dual, dtype=np.float64) if (not integer and sol.dual_valid) else None
    return SolveResult(name, x, obj, bound, time.perf_counter() - t0, row_dual)
