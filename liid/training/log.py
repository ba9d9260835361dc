"""Training log: JSON lines (one record per step and per epoch) and a loss-curve PNG.

matplotlib is not a dependency of the toolkit, so the curve is drawn with PIL: per-step losses in grey,
epoch means in blue, dashed lines at epoch boundaries, the loss range on the y axis.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw

from liid.atomic import atomic_file
from liid.errors import LiidError


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines log; a missing file is an empty log, a corrupt line a LiidError."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise LiidError(f"{path}:{n}: corrupt log line ({e})") from None
    return records


def write_log(path: str | os.PathLike, records: list[dict]) -> None:
    """Write all ``records`` as JSON lines, atomically (rewritten every epoch, so a crash loses no old lines)."""
    with atomic_file(path, overwrite=True) as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def plot_losses(path: str | os.PathLike, records: list[dict], width: int = 800, height: int = 400,
                title: str = "training") -> None:
    """Draw the loss curve of ``records`` (``type`` "step" and "epoch") to a PNG, atomically."""
    steps = [r for r in records if r.get("type") == "step" and math.isfinite(r.get("loss", math.nan))]
    epochs = [r for r in records if r.get("type") == "epoch" and math.isfinite(r.get("loss", math.nan))]
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    left, right, top, bottom = 60, width - 20, 30, height - 40
    d.rectangle([left, top, right, bottom], outline="black")
    d.text((left, 8), f"{title}: loss per step (grey), epoch mean (blue)", fill="black")
    d.text((left, bottom + 8), "step", fill="black")
    if steps:
        ys = [r["loss"] for r in steps] + [r["loss"] for r in epochs]
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        n = len(steps)

        def px(i: float) -> float:
            return left + (right - left) * (i / max(n - 1, 1))

        def py(v: float) -> float:
            return bottom - (bottom - top) * (v - lo) / (hi - lo)

        d.text((4, top - 6), _fmt(hi), fill="black")
        d.text((4, bottom - 6), _fmt(lo), fill="black")
        d.text((right - 40, bottom + 8), str(n), fill="black")
        ends: dict[int, int] = {}
        for i, r in enumerate(steps):
            ends[r["epoch"]] = i
        for e, i in ends.items():
            if i < n - 1:
                x = px(i + 0.5)
                for y in range(top, bottom, 8):
                    d.line([x, y, x, min(y + 4, bottom)], fill=(170, 170, 170))
            d.text((px(i) - 20, top + 4), f"ep {e}", fill=(90, 90, 90))
        d.line([(px(i), py(r["loss"])) for i, r in enumerate(steps)] if n > 1 else [(px(0), py(steps[0]["loss"]))] * 2,
               fill=(150, 150, 150), width=1)
        pts = [(px(ends[r["epoch"]]), py(r["loss"])) for r in epochs if r["epoch"] in ends]
        if len(pts) > 1:
            d.line(pts, fill=(30, 80, 200), width=2)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(30, 80, 200))
    with atomic_file(path, overwrite=True, mode="wb") as f:
        im.save(f, format="PNG")
