"""Build detectron2 from ``../shared/vendor/`` into this environment, once per machine (``make test`` calls it).

    python tools/build_detectron2.py              # build (or reuse) the wheel, install it and its dependencies
    python tools/build_detectron2.py --check      # say whether detectron2 is importable, exit 0/1

detectron2 is not on the package registries reachable here; its source is ``../shared/vendor/detectron2-*.tar.gz``.
The wheel is built with ``pip wheel --no-deps --no-build-isolation`` (its setup.py imports torch, so build
isolation would hide torch from it) and cached outside the clone, under ``$LIID_CACHE`` (default
``~/.cache/liid``) ``/wheels/``, keyed by the tarball's SHA-256, the Python tag and the torch version, so a warm
machine does not rebuild. It is installed with ``--no-deps``; its runtime dependencies come pinned from
``requirements-detectron2.lock``, which leaves torch, torchvision, numpy and pillow alone. Where the tarball is
absent, nothing happens and the reason is printed (the detectron2 tests then skip with that reason).
The cache is written atomically (a temporary name, then a rename), so a killed build leaves no half wheel.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT.parent / "shared" / "vendor"
LOCK = ROOT / "requirements-detectron2.lock"


class BuildError(Exception):
    """A build or install step failed: one line naming the file or the step."""


def _run(cmd: list[str], what: str, **kw) -> None:
    try:
        subprocess.run(cmd, check=True, **kw)
    except subprocess.CalledProcessError as e:
        raise BuildError(f"{what} failed (exit status {e.returncode}; pip's output is above)") from None


def tarball() -> Path | None:
    found = sorted(VENDOR.glob("detectron2-*.tar.gz"))
    return found[-1] if found else None


def cache_dir() -> Path:
    return Path(os.environ.get("LIID_CACHE", Path.home() / ".cache" / "liid")) / "wheels"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wheel_key(src: Path) -> str:
    import torch  # noqa: PLC0415

    return f"{_sha256(src)[:16]}-cp{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}"


def build_wheel(src: Path, dest: Path) -> Path:
    """Build the wheel of ``src`` into the cache folder ``dest`` (atomically); returns the wheel's path."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="liid-d2-") as tmp:
        tmp = Path(tmp)
        with tarfile.open(src) as tf:
            tf.extractall(tmp / "src", filter="data")
        roots = [p for p in (tmp / "src").iterdir() if (p / "setup.py").is_file()]
        source = roots[0] if roots else tmp / "src"
        if not (source / "setup.py").is_file():
            raise BuildError(f"{src}: no setup.py inside")
        out = tmp / "wheel"
        print(f"building detectron2 from {src.name} (a few CPU-minutes, once per machine) ...", flush=True)
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
              str(source)], f"building the detectron2 wheel from {src}",
             env={**os.environ, "MAX_JOBS": str(os.cpu_count())})
        (whl,) = out.glob("detectron2-*.whl")
        final = dest / whl.name
        part = dest / (whl.name + f".tmp-{os.getpid()}")
        shutil.copyfile(whl, part)
        if part.stat().st_size != whl.stat().st_size:
            part.unlink()
            raise BuildError(f"{part}: short copy to the cache")
        os.replace(part, final)
        return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only say whether detectron2 imports")
    a = ap.parse_args(argv)
    if a.check:
        ok = importlib.util.find_spec("detectron2") is not None
        print("detectron2: " + ("installed" if ok else "not installed"))
        return 0 if ok else 1
    src = tarball()
    if src is None:
        print(f"detectron2: skipped, no {VENDOR}/detectron2-*.tar.gz (its tests will skip)")
        return 0
    try:
        key_dir = cache_dir() / wheel_key(src)
        wheels = sorted(key_dir.glob("detectron2-*.whl")) if key_dir.is_dir() else []
        whl = wheels[-1] if wheels else build_wheel(src, key_dir)
        print(f"detectron2: {'cached wheel' if wheels else 'built'} {whl}", flush=True)
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        _run([*pip, "-r", str(LOCK)], f"installing {LOCK.name}")
        _run([*pip, "--no-deps", "--force-reinstall", str(whl)], f"installing {whl}")
        _run([sys.executable, "-c", "import detectron2, detectron2._C"], f"importing the installed {whl.name}")
    except (BuildError, OSError, tarfile.TarError) as e:
        print(f"error: detectron2: {e}", file=sys.stderr)
        return 2
    print("detectron2: installed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
