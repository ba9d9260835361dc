"""Atomic outputs: write to a temporary sibling, check every byte arrived, rename on success, remove on failure.

A crash, a full disk or a bad input never leaves a half-written output under the final name; an existing
output is only replaced with ``overwrite=True``, and only when this toolkit wrote it (its ``.liid.json``
record, or a stage record of an older version); an output is never one of the command's inputs, nor inside
or around one, whatever ``overwrite`` says. Final outputs take the user's umask (``tempfile`` makes 0600
files and 0700 folders, which a colleague or a container running as another user could not read).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from liid.errors import LiidError

MARKER = ".liid.json"  # every folder atomic_dir writes: what it holds (relative path → bytes), for the skip check
MARKER_FORMAT = "liid.output"
# stage records of folders written before MARKER existed (their JSON "format" starts with "liid")
LEGACY_RECORDS = ("graph.json", "store.json", "index.json", "export.json", "synthetic.json", "train.json",
                  "summary.json", "epoch.json", "masks.json", "settings.json")


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


def public_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have under the user's umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_UMASK)


def check_inputs(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output that is, contains or lies inside one of the inputs (``--overwrite`` cannot change this:
    replacing it would delete the data the command reads)."""
    o = Path(os.path.abspath(out)).resolve()
    for i in inputs:
        if i is None or str(i) == "":
            continue
        r = Path(os.path.abspath(i)).resolve()
        if o == r:
            how = "is"
        elif r.is_relative_to(o):
            how = "contains"
        elif o.is_relative_to(r) and r.is_dir():
            how = "lies inside"
        else:
            continue
        raise LiidError(f"{out}: the output {how} the input {i}; choose another output folder "
                        "(--overwrite does not change this)")


def is_toolkit_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder this toolkit wrote: its MARKER, or a known stage record tagged ``liid*``."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    for name in LEGACY_RECORDS:
        f = path / name
        if f.is_file() and f.stat().st_size < 1 << 24:
            with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
                fmt = json.loads(f.read_text()).get("format")
                if isinstance(fmt, str) and fmt.startswith("liid"):
                    return True
    return False


def exists(path: str | os.PathLike) -> bool:
    """Whether an output is there: an empty folder (``mkdir OUT`` before the run) is not one."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        return any(True for _ in path.iterdir())
    return path.exists() or path.is_symlink()


def check_output(path: str | os.PathLike, overwrite: bool, inputs: Iterable[str | os.PathLike | None] = (),
                 kind: str | None = None, ours: bool = False) -> Path:
    """Refuse an output before any work starts: one that is or holds an input, an existing one without
    ``overwrite``, a foreign folder even with it, a missing or unwritable parent. ``kind``: "dir" or "file"
    when the caller knows what it will write there; ``ours``: the caller's own sub-folder (a trainer's seeds),
    replaced without asking who wrote it."""
    path = Path(os.path.abspath(path))  # "--out ." has a name and a parent only once absolute
    check_inputs(path, inputs)
    if exists(path):
        if kind == "dir" and not path.is_dir():
            raise LiidError(f"{path}: exists and is not a folder")
        if kind == "file" and path.is_dir():
            raise LiidError(f"{path}: is a folder, not a file")
        if not overwrite:
            raise LiidError(f"{path}: output exists; pass --overwrite to replace it")
        if path.is_dir() and not ours and not is_toolkit_output(path):
            raise LiidError(f"{path}: not a folder this toolkit wrote (no {MARKER}); refusing to replace it "
                            "(remove it yourself, or choose another output)")
    return check_parent(path)


def check_parent(path: str | os.PathLike) -> Path:
    """The folder ``path`` will be written in exists, is a folder and is writable (before any work starts)."""
    path = Path(os.path.abspath(path))
    parent = path.parent
    if not parent.exists():
        raise LiidError(f"{parent}: folder does not exist")
    if not parent.is_dir():
        raise LiidError(f"{parent}: is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LiidError(f"{parent}: folder is not writable")
    return path


def _npy_size(file: Path) -> int | None:
    """The size a .npy file must have by its own header: -1 when the header is unreadable (a corrupt or
    truncated file), None for object arrays (pickles, whose size the header does not fix)."""
    fmt = np.lib.format
    try:
        with open(file, "rb") as f:
            major, _ = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
            if dtype.hasobject:
                return None
            return f.tell() + math.prod(shape) * dtype.itemsize
    except (OSError, ValueError, EOFError):
        return -1


def check_complete(folder: str | os.PathLike) -> None:
    """Raise when a folder's files are not what was written: a size other than its MARKER records (a short
    write, a truncated copy, a file edited since), a missing file, or (folders without MARKER) a .npy file
    shorter or longer than its header says."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        try:
            files = json.loads(marker.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            raise LiidError(f"{marker}: corrupt output record; pass --overwrite to redo it") from None
        for rel, size in files.items():
            f = folder / rel
            have = f.stat().st_size if f.is_file() else None
            if have != size:
                got = "missing" if have is None else f"{have:,} bytes"
                raise LiidError(f"{f}: incomplete or changed since it was written ({got}, {size:,} recorded); "
                                "pass --overwrite to redo it")
        return
    for f in sorted(folder.glob("*.npy")):
        want = _npy_size(f)
        if want is not None and want != f.stat().st_size:
            raise LiidError(f"{f}: truncated or corrupt .npy file; pass --overwrite to redo it")


def _seal(folder: Path) -> None:
    """Before a folder becomes final: flush every file to disk, check each .npy holds the bytes its header
    promises, record every file's size in MARKER, and give it the user's umask."""
    files: dict[str, int] = {}
    for f in sorted(folder.rglob("*")):
        if f.is_dir() and not f.is_symlink():
            public_mode(f, folder=True)
        if not f.is_file() or f.is_symlink() or f.name == MARKER:
            continue
        size = f.stat().st_size
        if f.suffix == ".npy":
            want = _npy_size(f)
            if want is not None and want != size:
                raise OSError(errno.EIO, f"short write: {size:,} of {want:,} bytes reached the file", str(f))
        files[f.relative_to(folder).as_posix()] = size
    write_bytes(folder / MARKER, (json.dumps({"format": MARKER_FORMAT, "version": 1, "written":
                time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files}, indent=1) + "\n").encode())
    os.sync()  # one flush for the whole folder (an fsync per file costs seconds on a VOC export's 10k PNGs)
    public_mode(folder, folder=True)


def write_marker(folder: str | os.PathLike) -> None:
    """Mark a folder written step by step (a training run) as this toolkit's, so that --overwrite may
    replace it; it records no sizes (its files change while it trains)."""
    f = Path(folder) / MARKER
    if not f.exists():
        write_bytes(f, (json.dumps({"format": MARKER_FORMAT, "version": 1, "written":
                        time.strftime("%Y-%m-%dT%H:%M:%S"), "files": {}, "incremental": True}) + "\n").encode())


def _tmp_prefix(path: Path) -> str:
    return f"{path.name}.tmp-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale(path: Path) -> None:
    """Remove the temporaries that a killed run (``kill -9``, a power cut) left beside ``path``: those whose
    writer's pid (in the name) is no longer alive. A live writer's are left alone."""
    for p in path.parent.glob(path.name + ".tmp-*-*"):
        pid = p.name[len(path.name) + 5:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


def _named(e: OSError, path: Path) -> OSError:
    """The error with the output's name when it has none (numpy's "N requested and M written" names no file)."""
    if e.filename is not None:
        return e
    return OSError(e.errno, e.strerror or str(e), str(path))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike | None] = (), ours: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds and every file checks out
    (``check_output`` says what is refused first)."""
    path = check_output(path, overwrite, inputs, kind="dir", ours=ours)
    sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
    try:
        yield tmp
        _seal(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _named(e, path) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists() or path.is_symlink():
        old = path.with_name(path.name + f".old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False, mode: str = "w") -> Iterator:
    """Yield an open temporary file that becomes ``path`` when the block succeeds and all its bytes reached
    the disk (flushed, fsynced, the file's size equal to what was written)."""
    path = check_output(path, overwrite, kind="file")
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            written, size = f.tell(), os.fstat(f.fileno()).st_size
        if written != size:
            raise OSError(errno.EIO, f"short write: {size:,} of {written:,} bytes reached the file", str(path))
        public_mode(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _named(e, path) from e
        raise


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` atomically, checking that every byte reached the file."""
    with atomic_file(path, overwrite=overwrite, mode="wb") as f:
        view = memoryview(data)
        while view:  # a raw write may take fewer bytes than offered (a full disk, a size limit)
            n = f.write(view)
            if not n:
                raise OSError(errno.EIO, f"short write: {len(data) - len(view):,} of {len(data):,} bytes", str(path))
            view = view[n:]


def _strict(obj):
    """JSON has no NaN or infinity: write them as null (``json.dump`` would write ``NaN``, which no strict
    reader accepts)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.generic):
        return _strict(obj.item())
    return obj


def write_json(path: str | os.PathLike, obj, overwrite: bool = True, compact: bool = False) -> None:
    """Write strict JSON atomically (inside an atomic directory ``overwrite`` is harmless); ``compact`` for bulk
    data."""
    obj = _strict(obj)
    buf = io.StringIO()
    if compact:
        json.dump(obj, buf, separators=(",", ":"), allow_nan=False)
    else:
        json.dump(obj, buf, indent=1, allow_nan=False)
        buf.write("\n")
    write_bytes(path, buf.getvalue().encode(), overwrite=overwrite)


def save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    """``np.save`` with the check that the file holds every byte the header promises."""
    np.save(path, arr, allow_pickle=False)
    want, size = _npy_size(Path(path)), os.path.getsize(path)
    if want is not None and want != size:
        raise OSError(errno.EIO, f"short write: {size:,} of {want:,} bytes reached the file", str(path))


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file; a missing or corrupt file is a LiidError naming it."""
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise LiidError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LiidError(f"{path}: corrupt JSON ({e})") from None


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Load a .npy array; a missing, truncated or corrupt file is a LiidError naming it."""
    path = Path(path)
    if not path.exists():
        raise LiidError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise LiidError(f"{path}: corrupt .npy file (no NumPy header)")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise LiidError(f"{path}: truncated or corrupt .npy file ({e})") from None


def read_header(folder: Path, name: str, fmt: str, version: int, what: str) -> dict:
    """Read ``folder/name`` (a stage's JSON header) and check its ``format`` and ``version``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LiidError(f"{folder}: {what} directory not found")
    meta = read_json(folder / name)
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise LiidError(f"{folder}/{name}: not a {what} (format {found!r})")
    v = meta.get("version", 0)
    if not isinstance(v, int) or v > version:
        raise LiidError(f"{folder}/{name}: version {v!r} is not one this toolkit reads (<= {version})")
    return meta
