"""Proposals for every image of a dataset, generated (selective search) or imported, filtered, written as a store.

The library side of ``liid proposals``: ``process_image`` is the per-image work (load + generate, or import;
then ``filter_proposals``), run in this process or in a spawn-context process pool; ``generate_proposal_store``
is the resumable driver. Each finished image is written at once (atomically) to ``OUT.partial/images/<id>.json``
next to ``OUT.partial/settings.json``; a rerun with the same settings reuses those, a rerun with other settings
is refused (or, with ``overwrite``, starts afresh). When every image is done the store is written atomically
to ``OUT`` (``index.json`` ``"meta"`` records how) and the work folder is removed.

A run holds the exclusive lock ``OUT.partial/.lock`` (``liid.workers.run_lock``) from before it touches the
work folder until ``OUT`` is written, and shares it with its workers, which die with it: a second run on the
same ``OUT``, or a rerun while a worker of a killed run still lives, is refused instead of racing it.

Images that cannot be read (selective search) are skipped and reported, not fatal: one bad JPEG in 100k should
not cost the run. Errors in imported proposal files are fatal: they mean the import is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from liid.atomic import check_complete, check_output, exists, read_json, write_json
from liid.datasets.base import Dataset, ImageInfo, read_rgb
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.parallel import iter_tasks
from liid.progress import progress as progress_bar
from liid.proposals.filtering import FilterConfig, filter_proposals
from liid.proposals.importers import PER_IMAGE_FORMATS, import_image_proposals, read_coco_results
from liid.proposals.selective_search import SelectiveSearchConfig, selective_search
from liid.proposals.store import (
    ImageProposals,
    proposal_json,
    read_image_proposals,
    read_proposal_index,
    read_proposal_meta,
    write_proposal_store,
)
from liid.workers import LOCK_NAME, RunLock, process_pool, run_lock

SELECTIVE_SEARCH = "selective-search"
COCO_RESULTS = "coco-results"
METHODS: tuple[str, ...] = (SELECTIVE_SEARCH, *PER_IMAGE_FORMATS, COCO_RESULTS)
EXTENSIONS = {"mcg-mat": ".mat", "mcg-boxes": ".mat", "prm-json": ".json"}  # per-image file: <image id><ext>
PARTIAL_FORMAT = "liid.proposals_partial"

Echo = Callable[[str], None]


# --- the per-image work ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What every image's work shares; sent once to each worker process."""

    method: str
    filter: FilterConfig
    work_dir: Path  # OUT.partial/images
    selective_search: SelectiveSearchConfig | None = None
    max_proposals: int | None = None  # importers: the first n of each file
    dataset: Dataset | None = None  # set only when the dataset overrides load_image


@dataclass(frozen=True)
class ImageTask:
    """One image to do; small, so it pickles cheaply to a worker."""

    image_id: str
    file: Path
    height: int
    width: int
    source: Path | None = None  # the per-image proposal file (mcg-mat, mcg-boxes, prm-json)
    proposals: ImageProposals | None = None  # already imported (coco-results)


def load_image(job: Job, task: ImageTask) -> np.ndarray:
    """The image as uint8 RGB: ``Dataset.load_image`` (``read_rgb`` with the recorded size, unless the dataset
    overrides it); a LiidError naming the file when it is unreadable or truncated."""
    if job.dataset is not None:
        return job.dataset.load_image(task.image_id)
    return read_rgb(task.file, task.height, task.width)


def process_image(job: Job, task: ImageTask) -> dict:
    """Generate or import one image's proposals, filter them, write them to the work folder.

    Returns ``{"id", "status": "ok", "proposals", "raw", "seconds"}``, or ``{"id", "status": "skipped",
    "reason"}`` when selective search cannot read the image. The proposals themselves go to the file, not
    back to the caller (no large pickles between processes).
    """
    t0 = time.perf_counter()
    if job.method == SELECTIVE_SEARCH:
        try:
            rgb = load_image(job, task)
        except LiidError as e:
            return {"id": task.image_id, "status": "skipped", "reason": str(e)}
        raw = selective_search(rgb, job.selective_search or SelectiveSearchConfig(), image_key=task.image_id)
    elif task.proposals is not None:
        raw = task.proposals
    elif task.source is not None:
        raw = import_image_proposals(task.source, job.method, task.height, task.width,
                                     max_proposals=job.max_proposals)
    else:
        raise LiidError(f"image {task.image_id!r}: no proposal source for method {job.method!r}")
    kept = filter_proposals(raw, job.filter)
    seconds = time.perf_counter() - t0
    write_json(job.work_dir / f"{task.image_id}.json",
               proposal_json(task.image_id, kept, raw=len(raw), seconds=round(seconds, 6)), compact=True)
    return {"id": task.image_id, "status": "ok", "proposals": len(kept), "raw": len(raw), "seconds": seconds}


_WORKER_JOB: Job | None = None


def _init_worker(job: Job) -> None:
    """Pool initializer: one OpenCV thread per process (the pool is the parallelism), keep the job."""
    import cv2

    cv2.setNumThreads(1)
    global _WORKER_JOB
    _WORKER_JOB = job


def _pool_process(task: ImageTask) -> dict:
    assert _WORKER_JOB is not None
    return process_image(_WORKER_JOB, task)


def _ray_process(task: ImageTask, job: Job) -> dict:
    """One image as a Ray task (one OpenCV thread: the cluster's CPUs are the parallelism)."""
    import cv2

    cv2.setNumThreads(1)
    return process_image(job, task)


def run_tasks(job: Job, tasks: Sequence[ImageTask], workers: int = 1, hold: RunLock | None = None,
              backend: str | None = None, ray_address: str | None = None) -> Iterator[dict]:
    """``process_image`` over ``tasks``; results in completion order. ``workers > 1``: a spawn-context process
    pool (``liid.workers.process_pool``: workers die with this process and share the run lock ``hold``) with a
    bounded number of tasks in flight; the first error cancels the rest. ``backend="ray"``: one Ray task per
    image on the cluster at ``ray_address`` (or a local Ray of ``workers`` CPUs), each writing its file into
    the work folder (which every node must see), a dead worker's image retried, a bounded number in flight.
    Close the iterator when stopping early, so the pool is shut down before the lock is released."""
    if backend == "ray":
        for _, r in iter_tasks(_ray_process, tasks, (job,), "ray", workers, ray_address, desc="proposals"):
            yield r
        return
    if workers <= 1 or len(tasks) <= 1 or backend == "serial":
        for task in tasks:
            yield process_image(job, task)
        return
    todo = iter(tasks)
    with process_pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(job,), hold=hold) as pool:
        pending: set[Future] = set()
        try:
            for task in todo:
                pending.add(pool.submit(_pool_process, task))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.add(pool.submit(_pool_process, nxt))
        finally:
            for fut in pending:
                fut.cancel()


# --- settings, inputs, the up-to-date rule ------------------------------------------------------------------


def _normal(obj):
    """``obj`` as it reads back from JSON (tuples become lists), for comparisons with recorded values."""
    return json.loads(json.dumps(obj))


def run_settings(dataset: Dataset, method: str, source: Path | None, filter_config: FilterConfig,
                 selective_search_config: SelectiveSearchConfig | None, max_proposals: int | None) -> dict:
    """Everything a per-image result depends on (recorded in ``OUT.partial/settings.json`` and the store's meta).

    The whole generator config is recorded, so a change of its defaults makes old results differ too.
    ``--workers`` and ``--limit`` are not settings: they change neither image's proposals.
    """
    s: dict = {"method": method, "dataset": dataset.describe(), "filter": asdict(filter_config)}
    if method == SELECTIVE_SEARCH:
        s["selective_search"] = asdict(selective_search_config or SelectiveSearchConfig())
    else:
        s["from"] = str(Path(source).resolve()) if source is not None else None
        s["max_proposals"] = max_proposals
    return _normal(s)


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def images_signature(images: Sequence[ImageInfo], files: Sequence[Path] | None = None) -> dict:
    """Cheap identity of the chosen images (ids, sizes, file sizes; stat only, no reading): the store is
    redone when an image is added, removed or replaced. ``files``: the per-image proposal files, likewise."""
    h = hashlib.sha256()
    for k, im in enumerate(images):
        h.update(f"{im.id}\0{im.file.name}\0{im.height}\0{im.width}\0{_file_size(im.file)}\0".encode())
        if files is not None:
            h.update(f"{files[k].name}\0{_file_size(files[k])}\0".encode())
    return {"count": len(images), "sha256": h.hexdigest()[:16]}


def store_up_to_date(out: Path, expected: dict, overwrite: bool, echo: Echo) -> bool:
    """The stage rule (``liid.stage.up_to_date``) for a proposal store, whose record is
    ``index.json`` ``meta.inputs``: True (skip) when equal, an error when different, False when absent."""
    if not exists(out):
        return False
    if overwrite:
        check_output(out, overwrite=True)  # before any work: --overwrite replaces only what this toolkit wrote
        return False
    try:
        recorded = read_proposal_meta(out).get("inputs")
    except LiidError:
        recorded = None
    if recorded == _normal(expected):
        check_complete(out)  # a skip never trusts a damaged store
        echo(f"{out}: up to date (same inputs and settings), skipping; --overwrite to redo")
        return True
    raise LiidError(f"{out}: output exists (made from other inputs or settings); pass --overwrite to replace it")


def partial_dir(out: Path) -> Path:
    """The work folder of an unfinished run: ``OUT.partial`` beside ``OUT``."""
    return out.with_name(out.name + ".partial")


def open_partial(partial: Path, settings: dict, overwrite: bool) -> None:
    """Create the work folder, or check that an existing one was made with ``settings`` (``overwrite``
    clears it instead). Its lock file is not part of a run's results: it is kept, and alone it is no run."""
    leftovers = [p for p in partial.iterdir() if p.name != LOCK_NAME] if partial.is_dir() else []
    if leftovers and overwrite:
        for p in leftovers:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        leftovers = []
    if leftovers:
        try:
            recorded = read_json(partial / "settings.json").get("settings")
        except (LiidError, AttributeError):
            recorded = None
        if recorded != settings:
            raise LiidError(f"{partial}: an unfinished run with other settings is there; rerun with its settings "
                            f"to resume it, or pass --overwrite to discard it")
    (partial / "images").mkdir(parents=True, exist_ok=True)
    for stray in (partial / "images").glob(".*.tmp-*"):  # a worker killed mid-write
        stray.unlink(missing_ok=True)
    if not (partial / "settings.json").exists():
        write_json(partial / "settings.json", {"format": PARTIAL_FORMAT, "settings": settings})


def _partial_entry(im: ImageInfo) -> dict:
    return {"id": im.id, "height": im.height, "width": im.width, "file": f"images/{im.id}.json"}


def finished_images(partial: Path, images: Sequence[ImageInfo]) -> dict[str, dict]:
    """Per-image results already in the work folder (``{"proposals", "raw", "seconds"}`` by id); a file that
    does not read back is deleted and its image redone."""
    names = {p.name for p in (partial / "images").glob("*.json")}
    done: dict[str, dict] = {}
    for im in images:
        file = partial / "images" / f"{im.id}.json"
        if file.name not in names:
            continue
        try:
            props = read_image_proposals(partial, _partial_entry(im))
            d = read_json(file)
            done[im.id] = {"proposals": len(props), "raw": int(d.get("raw", len(props))),
                           "seconds": float(d.get("seconds", 0.0))}
        except (LiidError, TypeError, ValueError):
            file.unlink(missing_ok=True)
    return done


# --- the driver ---------------------------------------------------------------------------------------------


def store_entry(dataset: Dataset, im: ImageInfo) -> dict:
    """The store's index entry of an image; ``file_name`` relative to the dataset's image folder."""
    name = im.file.name
    root = getattr(dataset, "images_dir", None)
    if root is not None:
        with contextlib.suppress(ValueError):
            name = im.file.relative_to(root).as_posix()
    return {"id": im.id, "file_name": name, "height": im.height, "width": im.width, "coco_id": im.coco_id}


def check_source(method: str, source: Path | None) -> None:
    """``--from`` given exactly when an importer is used, and of the right kind."""
    if method not in METHODS:
        raise LiidError(f"unknown proposal method {method!r} (one of {', '.join(METHODS)})")
    if method == SELECTIVE_SEARCH:
        if source is not None:
            raise LiidError(f"--from applies to imported proposals (--method {', '.join(METHODS[1:])}); "
                            f"selective search generates them from the images")
        return
    if source is None:
        kind = "a JSON file" if method == COCO_RESULTS else "a folder of per-image files"
        raise LiidError(f"--method {method} needs --from PATH ({kind})")
    if method == COCO_RESULTS and not source.is_file():
        raise LiidError(f"{source}: COCO results file not found")
    if method != COCO_RESULTS and not source.is_dir():
        raise LiidError(f"{source}: proposal folder not found (--method {method} reads "
                        f"<folder>/<image id>{EXTENSIONS[method]})")


def _source_files(method: str, source: Path, images: Sequence[ImageInfo]) -> list[Path]:
    """The per-image proposal files; all must exist (checked before any work)."""
    ext = EXTENSIONS[method]
    names = set(os.listdir(source))
    files = [source / f"{im.id}{ext}" for im in images]
    missing = [f for f in files if f.name not in names and not f.is_file()]
    if missing:
        raise LiidError(f"{missing[0]}: proposal file not found ({len(missing)} of {len(files)} images have no "
                        f"{ext} file in {source})")
    return files


def generate_proposal_store(dataset: Dataset, out: str | os.PathLike, method: str = SELECTIVE_SEARCH,
                            source: str | os.PathLike | None = None, *,
                            filter_config: FilterConfig | None = None,
                            selective_search_config: SelectiveSearchConfig | None = None,
                            max_proposals: int | None = None, workers: int = 1, limit: int | None = None,
                            overwrite: bool = False, echo: Echo = print, warn: Echo = print,
                            progress: bool = True, backend: str | None = None,
                            ray_address: str | None = None) -> dict:
    """Proposals for the dataset's images (the first ``limit``), filtered, written to the store ``out``.

    ``backend`` (serial | process | ray; default: process when ``workers`` > 1) and ``ray_address`` say where
    the per-image tasks run (``run_tasks``). Resumable (module docstring). Returns the summary (also under
    ``meta`` in ``out/index.json``), with ``"up_to_date": True`` and nothing done when ``out`` already holds
    the same result.
    """
    out = Path(out)
    source = Path(source) if source is not None else None
    check_source(method, source)
    filter_config = filter_config or FilterConfig()
    filter_config.validate()
    if method == SELECTIVE_SEARCH:
        selective_search_config = selective_search_config or SelectiveSearchConfig()
        selective_search_config.validate()
    if not out.parent.exists():
        raise LiidError(f"{out.parent}: folder does not exist")
    images = list(dataset.images[:limit] if limit is not None else dataset.images)
    if not images:
        raise LiidError(f"{dataset.source}: no images")
    files = _source_files(method, source, images) if method in EXTENSIONS else None
    settings = run_settings(dataset, method, source, filter_config, selective_search_config, max_proposals)
    inputs = {"settings": settings, "images": images_signature(images, files)}
    if method == COCO_RESULTS:
        inputs["from_fingerprint"] = fingerprint(source)
    if store_up_to_date(out, inputs, overwrite, echo):
        return {"up_to_date": True, "out": str(out)}

    t0 = time.perf_counter()
    partial = partial_dir(out)
    with run_lock(partial) as lock:  # refused at once while another run (or a worker of one) holds it
        if store_up_to_date(out, inputs, overwrite, echo):  # the run that held the lock may just have finished
            return {"up_to_date": True, "out": str(out)}
        open_partial(partial, settings, overwrite)
        try:
            summary = _run(dataset, out, partial, method, source, images, files, inputs, filter_config,
                           selective_search_config, max_proposals, workers, overwrite, echo, warn, progress, t0,
                           lock, backend, ray_address)
        except BaseException:
            if partial.is_dir() and not any((partial / "images").glob("*.json")):
                shutil.rmtree(partial, ignore_errors=True)  # nothing worth resuming
            raise
        shutil.rmtree(partial, ignore_errors=True)
    return summary


def _run(dataset: Dataset, out: Path, partial: Path, method: str, source: Path | None, images: list[ImageInfo],
         files: list[Path] | None, inputs: dict, filter_config: FilterConfig,
         ss_config: SelectiveSearchConfig | None, max_proposals: int | None, workers: int, overwrite: bool,
         echo: Echo, warn: Echo, progress: bool, t0: float, lock: RunLock | None = None,
         backend: str | None = None, ray_address: str | None = None) -> dict:
    done = finished_images(partial, images)
    reused = len(done)
    if done:
        echo(f"{partial}: resuming: {len(done)} of {len(images)} images already done, reused")
    todo = [k for k, im in enumerate(images) if im.id not in done]
    imported: dict[int, ImageProposals] = {}
    if method == COCO_RESULTS and todo:
        sizes = {im.coco_id: (im.height, im.width) for im in dataset.images}
        imported = read_coco_results(source, sizes, max_per_image=max_proposals)
    tasks = []
    for k in todo:
        im = images[k]
        props = None
        if method == COCO_RESULTS:
            props = imported.pop(im.coco_id, None)
            if props is None:  # no results entry for this image
                props = ImageProposals(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [], im.height,
                                       im.width)
        tasks.append(ImageTask(im.id, Path(im.file).absolute(), im.height, im.width,  # a task runs elsewhere
                               source=Path(files[k]).absolute() if files is not None else None, proposals=props))
    overridden = type(dataset).load_image is not Dataset.load_image
    job = Job(method, filter_config, (partial / "images").absolute(), selective_search=ss_config,
              max_proposals=max_proposals, dataset=dataset if overridden and method == SELECTIVE_SEARCH else None)

    skipped: dict[str, str] = {}
    total = sum(d["proposals"] for d in done.values())
    with (progress_bar(total=len(images), initial=len(done), unit="img", desc="proposals", stream=sys.stderr,
                       enabled=progress, dynamic_ncols=True) as bar,
          contextlib.closing(run_tasks(job, tasks, workers, hold=lock, backend=backend,
                                       ray_address=ray_address)) as results):
        for r in results:
            if r["status"] == "skipped":
                skipped[r["id"]] = r["reason"]
                with tqdm.external_write_mode(file=sys.stderr):
                    warn(f"warning: skipping image {r['id']!r}: {r['reason']}")
            else:
                done[r["id"]] = {k: r[k] for k in ("proposals", "raw", "seconds")}
                total += r["proposals"]
                if r["proposals"] == 0:
                    with tqdm.external_write_mode(file=sys.stderr):
                        warn(f"warning: image {r['id']!r}: 0 proposals after filtering (kept, counted as empty)")
            bar.update(1)
            if done:
                bar.set_postfix_str(f"{total / len(done):.1f} proposals/img", refresh=False)

    kept = [im for im in images if im.id in done]
    if not kept:
        first = next(iter(skipped.values()), "")
        raise LiidError(f"{dataset.source}: no image could be read ({len(skipped)} skipped); the first: {first}")
    n = len(kept)
    empty = [im.id for im in kept if done[im.id]["proposals"] == 0]
    seconds_per_image = sum(done[im.id]["seconds"] for im in kept) / n
    summary = {
        "tool": "liid proposals",
        "inputs": inputs,  # settings (method, dataset, filter, generator config), image and file signatures
        "method": method,
        "counts": {"images": n, "proposals": total, "raw_proposals": sum(done[im.id]["raw"] for im in kept),
                   "skipped": len(skipped), "empty": len(empty), "reused": reused},
        "proposals_per_image": total / n,
        "seconds_per_image": seconds_per_image,
        "skipped": [{"id": i, "reason": skipped[i]} for i in (im.id for im in images) if i in skipped],
        "empty": empty,
        "workers": workers,
        "backend": backend or ("process" if workers > 1 else "serial"),
        "seconds": time.perf_counter() - t0,
    }
    entries = [store_entry(dataset, im) for im in kept]
    per_image = (read_image_proposals(partial, _partial_entry(im)) for im in kept)
    write_proposal_store(out, entries, per_image, overwrite=overwrite, meta=summary)
    return summary


def format_summary(out: Path | str, summary: dict) -> str:
    """The one-line report of a run."""
    c = summary["counts"]
    return (f"{out}: {c['images']} images, {summary['proposals_per_image']:.1f} proposals/image "
            f"({c['skipped']} skipped, {c['empty']} empty), {summary['seconds_per_image']:.2f} s/image")


# --- filtering an existing store ----------------------------------------------------------------------------


def store_signature(store: Path) -> dict:
    """Cheap identity of a proposal store: its ``index.json`` content and the sizes of its per-image files."""
    entries = read_proposal_index(store)
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e['file']}\0{_file_size(store / e['file'])}\0".encode())
    return {"store": str(store.resolve()), "index": fingerprint(store / "index.json"), "files": h.hexdigest()[:16]}


def filter_proposal_store(store: str | os.PathLike, out: str | os.PathLike, filter_config: FilterConfig,
                          overwrite: bool = False, echo: Echo = print, warn: Echo = print,
                          progress: bool = True) -> dict:
    """Apply ``filter_config`` to every image of an existing store, writing a new store ``out`` (atomically).

    Filtering is greedy best-first, so ``top`` on a store already filtered with the same thresholds keeps
    exactly the first ``top`` of each image. Returns the summary (``"up_to_date": True`` when skipped).
    """
    store, out = Path(store), Path(out)
    filter_config.validate()
    entries = read_proposal_index(store)
    if store.resolve() == out.resolve():
        raise LiidError(f"{out}: the output must differ from the input store")
    if not out.parent.exists():
        raise LiidError(f"{out.parent}: folder does not exist")
    inputs = {"filter": asdict(filter_config), "source": store_signature(store)}
    if store_up_to_date(out, inputs, overwrite, echo):
        return {"up_to_date": True, "out": str(out)}
    t0 = time.perf_counter()
    counts = {"images": len(entries), "proposals_in": 0, "proposals": 0, "empty": 0}
    empty: list[str] = []

    def filtered() -> Iterator[ImageProposals]:
        for e in progress_bar(entries, unit="img", desc="filter", stream=sys.stderr, enabled=progress):
            props = read_image_proposals(store, e)
            kept = filter_proposals(props, filter_config)
            counts["proposals_in"] += len(props)
            counts["proposals"] += len(kept)
            if len(kept) == 0:
                empty.append(e["id"])
            yield kept

    # ``counts`` and ``empty`` fill in as the images are written: write_proposal_store serialises meta last.
    meta = {"tool": "liid filter-proposals", "inputs": inputs, "filter": asdict(filter_config),
            "source_meta": read_proposal_meta(store), "counts": counts, "empty": empty}
    images_meta = [{k: e[k] for k in ("id", "file_name", "height", "width", "coco_id") if k in e} for e in entries]
    write_proposal_store(out, images_meta, filtered(), overwrite=overwrite, meta=meta)
    for i in empty:
        warn(f"warning: image {i!r}: 0 proposals after filtering (kept, counted as empty)")
    return {**meta, "seconds": time.perf_counter() - t0}
