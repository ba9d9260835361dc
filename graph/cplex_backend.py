"""Solve a ``graph.ckr.LinearProgram`` with IBM CPLEX (the solver the LIID paper used).

The PyPI ``cplex`` package is the Community Edition: at most 1000 variables and 1000 constraints. A larger
component raises a LiidError that says so; a full CPLEX installation runs the same code without limits.
"""

from __future__ import annotations

import time

import numpy as np

from liid.errors import LiidError
from liid.graph.ckr import LinearProgram
from liid.graph.highs_backend import SolveResult

COMMUNITY_LIMIT_CODES = {1016}  # CPXERR_RESTRICTED_VERSION: "Community Edition. Problem size limits exceeded."


def _import_cplex():
    try:
        import cplex  # noqa: PLC0415
    except ImportError:
        raise LiidError("--solver cplex needs IBM CPLEX: pip install 'liid[cplex]' "
                        "(Community Edition) or a full CPLEX installation") from None
    return cplex


def solve(lp: LinearProgram, integer: bool = False, time_limit: float = 60.0, name: str = "component",
          start: np.ndarray | None = None) -> SolveResult:
    """Solve the LP (dual simplex) or the MIP (x binary) with CPLEX; arrays in, arrays out. ``start``
    (a feasible column vector) becomes the MIP's first incumbent."""
    cplex = _import_cplex()
    from cplex.exceptions import CplexSolverError  # noqa: PLC0415

    t0 = time.perf_counter()
    c = cplex.Cplex()
    for stream in (c.set_log_stream, c.set_results_stream, c.set_warning_stream, c.set_error_stream):
        stream(None)
    c.parameters.threads.set(1)
    c.parameters.timelimit.set(float(max(time_limit, 1e-3)))
    c.parameters.lpmethod.set(c.parameters.lpmethod.values.dual)
    c.parameters.mip.tolerances.mipgap.set(0.0)
    c.parameters.mip.tolerances.absmipgap.set(1e-9)
    num_col, num_row = lp.A.shape[1], lp.A.shape[0]
    hi = np.where(np.isinf(lp.col_hi), cplex.infinity, lp.col_hi)
    types = ("B" * lp.num_x + "C" * (num_col - lp.num_x)) if integer else ""
    A = lp.A.tocsr()
    eq = np.isfinite(lp.row_hi) & (lp.row_hi == lp.row_lo)
    senses = "".join("E" if e else "G" for e in eq)
    rows = [cplex.SparsePair(ind=A.indices[A.indptr[i]:A.indptr[i + 1]].tolist(),
                             val=A.data[A.indptr[i]:A.indptr[i + 1]].tolist()) for i in range(num_row)]
    try:
        c.variables.add(obj=lp.c.tolist(), lb=lp.col_lo.tolist(), ub=hi.tolist(), types=types)
        c.linear_constraints.add(lin_expr=rows, senses=senses, rhs=lp.row_lo.tolist())
        if integer and start is not None:
            c.MIP_starts.add(cplex.SparsePair(ind=list(range(num_col)), val=np.asarray(start).tolist()),
                             c.MIP_starts.effort_level.check_feasibility)
        c.solve()
    except CplexSolverError as e:
        if e.args and len(e.args) > 2 and e.args[2] in COMMUNITY_LIMIT_CODES:
            raise LiidError(
                f"{name}: {num_col} variables and {num_row} constraints exceed the CPLEX Community Edition "
                "limits (1000 variables, 1000 constraints); install a full CPLEX or use --solver highs"
            ) from None
        raise LiidError(f"{name}: CPLEX failed: {e}") from None
    sol = c.solution
    status = sol.get_status()
    optimal = status in (sol.status.optimal, sol.status.MIP_optimal, sol.status.optimal_tolerance)
    timed = status in (sol.status.abort_time_limit, sol.status.MIP_time_limit_feasible,
                       sol.status.MIP_time_limit_infeasible)
    has_x = sol.is_primal_feasible()
    x = np.asarray(sol.get_values(), dtype=np.float64) if has_x else None
    obj = float(sol.get_objective_value()) + lp.const if has_x else float("inf")
    if integer:
        bound = float(sol.MIP.get_best_objective()) + lp.const
    else:
        bound = obj if optimal else float("-inf")
    name_ = "optimal" if optimal else ("time_limit" if timed else sol.get_status_string())
    duals = np.asarray(sol.get_dual_values(), dtype=np.float64) if (optimal and not integer) else None
    return SolveResult(name_, x, obj, bound, time.perf_counter() - t0, duals)
