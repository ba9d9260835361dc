"""``liid extract --backend ray``: the images cut into parts of consecutive images, one task each, on a Ray
cluster; each part's rows saved in ``OUT.partial/`` as it finishes, so an interrupted run resumes.

A task, not an image, is the unit because a task loads the MIL network (kept per worker process, so a worker
that takes several parts loads it once) and batches its images through it; ``--images-per-task`` sets the size.
Parts are consecutive images in dataset order, so the store is put together by copying each part's rows to
its place: the same store as ``liid extract`` in one process (eval mode, the same batches within a part).

``OUT.partial/settings.json`` records what a part depends on (the inputs, the size, the dtype, the part
size); a rerun with the same settings reuses the parts there, one with other settings is refused unless
``--overwrite``. The folder must be one every node sees.
"""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from liid.atomic import read_json, write_bytes, write_json
from liid.datasets.base import Dataset
from liid.errors import LiidError
from liid.graph.feature_store import FeatureStore
from liid.parallel import iter_tasks
from liid.progress import progress as progress_bar
from liid.training.mil_data import ProposalSet
from liid.workers import LOCK_NAME, run_lock

PARTIAL_FORMAT = "liid.extract_partial"


@dataclass(frozen=True)
class ExtractJob:
    """What every part shares (sent to each worker once): the network's checkpoint, the data, the settings."""

    checkpoint: Path
    dataset: Dataset
    pset: ProposalSet
    size: int
    batch_images: int
    feature_dtype: str
    device: str | None
    folder: Path  # OUT.partial


def part_file(folder: Path, part: int) -> Path:
    return folder / f"part-{part:06d}.npz"


_MODELS: dict = {}  # per worker process: the loaded network of a checkpoint (path, size, mtime)


def extract_part(images: tuple[int, int, int], job: ExtractJob) -> dict:
    """Part ``p`` = images ``[a, b)`` of the proposal set, as a task: extract them, save their rows."""
    from liid.models import pick_device  # noqa: PLC0415
    from liid.training.extract import extract_features, load_mil  # noqa: PLC0415

    p, a, b = images
    device = pick_device(job.device)
    st = job.checkpoint.stat()
    key = (str(job.checkpoint), st.st_size, st.st_mtime_ns, str(device))
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_mil(job.checkpoint, job.dataset, device)[0]
    pset = job.pset
    sub = replace(pset, ids=pset.ids[a:b], entries=pset.entries[a:b], boxes=pset.boxes[a:b],
                  labels=pset.labels[a:b])
    store, stats = extract_features(_MODELS[key], job.dataset, sub, job.size, device, batch_images=job.batch_images,
                                    feature_dtype=np.dtype(job.feature_dtype), progress=False)
    buf = io.BytesIO()
    np.savez(buf, features=store.features, probs=store.probs)
    write_bytes(part_file(job.folder, p), buf.getvalue())  # atomic: a part is whole or absent
    return {"part": p, "seconds": stats["seconds"]}


def _read_part(folder: Path, part: int, rows: int, dim: int, k1: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A finished part's (features, probs), or None when it is absent or not what its images need."""
    try:
        with np.load(part_file(folder, part)) as z:
            f, p = z["features"], z["probs"]
    except (OSError, ValueError, KeyError):
        return None
    return (f, p) if f.shape == (rows, dim) and p.shape == (rows, k1) else None


def _open_partial(folder: Path, settings: dict, overwrite: bool) -> None:
    leftovers = [p for p in folder.iterdir() if p.name != LOCK_NAME]
    if leftovers and overwrite:
        for p in leftovers:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    elif leftovers:
        try:
            recorded = read_json(folder / "settings.json").get("settings")
        except (LiidError, OSError, AttributeError):
            recorded = None
        if recorded != settings:
            raise LiidError(f"{folder}: an unfinished extract with other settings is there; rerun with its "
                            "settings to resume, or pass --overwrite to discard it")
    if not (folder / "settings.json").exists():
        write_json(folder / "settings.json", {"format": PARTIAL_FORMAT, "settings": settings})


def extract_on_cluster(checkpoint: Path, dataset: Dataset, pset: ProposalSet, size: int, dim: int, k1: int,
                       settings: dict, folder: Path, images_per_task: int = 64, batch_images: int = 4,
                       feature_dtype: str = "float16", device: str | None = None, ray_address: str | None = None,
                       cpus: int = 1, overwrite: bool = False, echo=print) -> tuple[FeatureStore, dict]:
    """The feature store of ``pset`` from parts extracted by Ray tasks (module docstring); ``folder`` is the
    resumable work folder (``OUT.partial``), removed once the store is made. Returns the store (unwritten) and
    the run's numbers."""
    n_img = len(pset)
    sizes = np.array([len(b) for b in pset.boxes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    parts = [(p, a, min(n_img, a + images_per_task)) for p, a in enumerate(range(0, n_img, images_per_task))]
    settings = {**settings, "images_per_task": images_per_task, "feature_dtype": feature_dtype}
    job = ExtractJob(checkpoint.absolute(), dataset, pset, size, batch_images, feature_dtype, device,
                     folder.absolute())
    n = int(offsets[-1])
    features = np.zeros((n, dim), dtype=feature_dtype)
    probs = np.zeros((n, k1), dtype=np.float32)
    t0 = time.perf_counter()
    with run_lock(folder):  # refused at once while another run holds it
        _open_partial(folder, settings, overwrite)
        done = set()
        for p, a, b in parts:  # the parts an earlier run finished, copied to their place
            got = _read_part(folder, p, int(offsets[b] - offsets[a]), dim, k1)  # None when absent
            if got is not None:
                features[offsets[a]:offsets[b]], probs[offsets[a]:offsets[b]] = got
                done.add(p)
        if done:
            echo(f"{folder}: resuming: {len(done)} of {len(parts)} parts already done, reused")
        todo = [t for t in parts if t[0] not in done]
        options = {"num_gpus": 1} if device is not None and device.startswith("cuda") else None
        bar = progress_bar(total=n_img, initial=sum(b - a for p, a, b in parts if p in done), desc="extract",
                           unit="img")
        task_seconds = 0.0
        for _, r in iter_tasks(extract_part, todo, (job,), "ray", cpus, ray_address, desc="extract parts",
                               ray_options=options):
            p, a, b = parts[r["part"]]
            got = _read_part(folder, p, int(offsets[b] - offsets[a]), dim, k1)
            if got is None:
                raise LiidError(f"{part_file(folder, p)}: the part a task wrote cannot be read back here; the "
                                "work folder must be one every node of the cluster sees")
            features[offsets[a]:offsets[b]], probs[offsets[a]:offsets[b]] = got
            task_seconds += r["seconds"]
            bar.update(b - a)
        bar.close()
    seconds = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    if not np.isfinite(features).all():
        raise LiidError("the MIL network gave NaN/inf features (a diverged checkpoint?)")
    store = FeatureStore(features=features, probs=probs,
                         proposal_image=np.repeat(np.arange(n_img, dtype=np.int32), sizes),
                         proposal_index=np.concatenate([np.arange(s, dtype=np.int32) for s in sizes]),
                         image_labels=pset.labels.copy(), classes=list(dataset.classes), images=list(pset.ids))
    stats = {"seconds": seconds, "images_per_second": n_img / seconds, "proposals_per_second": n / seconds,
             "device": f"ray ({device or 'auto'})", "backend": "ray", "parts": len(parts),
             "parts_reused": len(done), "images_per_task": images_per_task, "task_seconds": task_seconds, "size": size,
             "batch_images": batch_images, "feature_dtype": feature_dtype}
    return store, stats
