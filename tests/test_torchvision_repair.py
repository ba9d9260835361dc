"""torchvision's compiled ops work on this (CPU) torch, as made so by tools/repair_torchvision.py."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "repair_torchvision.py"


def load_tool() -> ModuleType:
    """Import tools/repair_torchvision.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("repair_torchvision", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, mod)
    spec.loader.exec_module(mod)
    return mod


def test_torchvision_imports() -> None:
    import torchvision

    assert torchvision.__version__
    assert hasattr(torch.ops.torchvision, "nms"), "torchvision's C++ ops are not registered"


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        # IoU(b3, b0) = 50/150 = 0.33, IoU(b3, b1) = 54/146 = 0.37, IoU(b0, b1) = 81/119 = 0.68, b2 disjoint
        (0.5, [3, 0, 2]),
        (0.3, [3, 2]),
    ],
)
def test_nms_keeps_expected_boxes(threshold: float, expected: list[int]) -> None:
    from torchvision.ops import nms

    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [5, 0, 15, 10]], dtype=torch.float32
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, threshold).tolist() == expected


def test_roi_pool_hand_computed_maxima() -> None:
    from torchvision.ops import roi_pool

    # channel 0: [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]; channel 1 = -channel 0
    grid = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    feat = torch.stack([grid, -grid]).unsqueeze(0)
    rois = torch.tensor([[0, 0, 0, 3, 3]], dtype=torch.float32)
    out = roi_pool(feat, rois, output_size=(2, 2), spatial_scale=1.0)
    assert out.shape == (1, 2, 2, 2)
    assert out[0, 0].tolist() == [[5, 7], [13, 15]]
    assert out[0, 1].tolist() == [[0, -2], [-8, -10]]

    # roi given in 2x coordinates with spatial_scale 0.5, and a 2x2 roi pooled to one cell
    rois = torch.tensor([[0, 0, 0, 6, 6], [0, 1, 1, 2, 2]], dtype=torch.float32)
    assert roi_pool(feat, rois[:1], output_size=2, spatial_scale=0.5)[0, 0].tolist() == [[5, 7], [13, 15]]
    assert roi_pool(feat, rois[1:], output_size=1, spatial_scale=1.0).flatten().tolist() == [10, -5]


def test_repair_check_reports_ok() -> None:
    proc = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ops ok" in proc.stdout


def test_stub_source_defines_functions_and_data() -> None:
    tool = load_tool()
    syms = [
        tool.Sym("_ZN3c104cuda12device_countEv", "FUNC", "GLOBAL"),
        tool.Sym("_ZN3c104cuda20CUDACachingAllocator9allocatorE", "OBJECT", "GLOBAL"),
        tool.Sym("_ZTVN3c104cuda9SomeClassE", "NOTYPE", "GLOBAL"),
    ]
    src = tool.stub_c_source("libc10_cuda.so", syms)
    assert '__asm__("_ZN3c104cuda12device_countEv")' in src
    assert 'tv_stub_fail("_ZN3c104cuda12device_countEv")' in src
    for data in ("_ZN3c104cuda20CUDACachingAllocator9allocatorE", "_ZTVN3c104cuda9SomeClassE"):
        assert re.search(rf'char tv_stub_\d+\[256\] __asm__\("{data}"\)', src), data
        assert f'tv_stub_fail("{data}")' not in src
    assert tool.version_script(syms) is None
    assert tool.assign_lib(syms[0], ["libc10_cuda.so", "libtorch_cuda.so"]) == "libc10_cuda.so"
    at_cuda = tool.Sym("_ZN2at4cuda26getCurrentDevicePropertiesEv", "FUNC", "GLOBAL")
    assert tool.assign_lib(at_cuda, ["libc10_cuda.so", "libtorch_cuda.so"]) == "libtorch_cuda.so"


def test_compiled_stub_aborts_with_message(tmp_path: Path) -> None:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler: cannot build a stub library (the repair itself would need one)")
    tool = load_tool()
    syms = [tool.Sym("_ZN3c104cuda12device_countEv", "FUNC", "GLOBAL")]
    tool.build_stub("libc10_cuda.so", syms, tmp_path, shutil.which("gcc") or shutil.which("cc"))
    lib = tmp_path / "libc10_cuda.so"
    code = f"import ctypes; getattr(ctypes.CDLL({str(lib)!r}), '_ZN3c104cuda12device_countEv')()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert (
        "torchvision CUDA stub _ZN3c104cuda12device_countEv called: this torch is a CPU build" in proc.stderr
    )
