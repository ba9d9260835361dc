"""What `pip install .` installs: one package, ``liid`` (the folders proposals/, graph/, detection/ as
liid.proposals, liid.graph, liid.detection), with the shipped configs; no global ``graph`` / ``detection`` /
``proposals`` that another library could take."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the working tree, built from a copy of its files (a build writes build/ into its source)."""
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True)
    (file,) = out.glob("liid-*.whl")
    return file


def test_the_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"liid"}
    for f in ("liid/graph/solve.py", "liid/detection/export.py", "liid/proposals/importers/__init__.py",
              "liid/configs/synthetic_demo.yaml", "liid/configs/voc_liid.yaml", "liid/configs/coco_liid.yaml",
              "liid/detection/configs/Base-RCNN-FPN.yaml"):
        assert f in names, f
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["liid"]


def test_installed_liid_graph_imports_and_graph_does_not(wheel, tmp_path):
    """Installed from the wheel (outside the repository): ``import liid.graph`` works, ``import graph`` fails."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    probe = (
        "import importlib, liid, liid.graph.solve, liid.detection.export, liid.proposals.generate\n"
        "from liid.config import config_file\n"
        f"assert liid.__file__.startswith({str(target)!r}), liid.__file__\n"
        "assert config_file('configs/voc_liid.yaml').is_file()\n"
        "for name in ('graph', 'detection', 'proposals'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    raise SystemExit(f'import {name} worked')\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
