"""Data-parallel training (liid.training.distributed): torchrun's 2 processes on CPU (gloo) train the same run as
one process with the same global batch; the batches are the single process's; rank 0 writes; resume under
another world size. Real torchrun, real gloo, the default backbone with its ImageNet weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.errors import LiidError
from liid.training.distributed import World, world_from_env

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
CLS = ["--size", "64", "--batch-size", "4", "--device", "cpu", "--seed", "3", "--lr", "0.02"]


def records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


def liid(*args: object, procs: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    """``liid ARGS`` in a fresh process, or under ``torchrun --nproc-per-node procs``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LIID_PROGRESS": "off"}
    env.pop("WORLD_SIZE", None)
    head = [sys.executable, "-m", "liid"] if procs == 1 else [*TORCHRUN, f"--nproc-per-node={procs}", "-m", "liid"]
    res = subprocess.run([*head, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "syn"
    write_synthetic(out, 11, seed=0, config=SyntheticConfig(size=64), progress=False)  # 11: a short last batch
    return out


@pytest.fixture(scope="module")
def one_and_two(syn, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    liid("train-cls", syn, "--out", base / "one", "--epochs", "2", *CLS)
    liid("train-cls", syn, "--out", base / "two", "--epochs", "2", *CLS, procs=2)
    return base / "one", base / "two"


def test_epoch_batches_are_the_single_process_loaders() -> None:
    """Oracle: the batches of torch's own shuffled DataLoader with the same generator seed."""
    for n, b in ((11, 4), (12, 4), (5, 8), (3, 4)):
        seed = 7 * n + b
        want = [t.tolist() for t in torch.utils.data.DataLoader(
            torch.arange(n), batch_size=b, shuffle=True, generator=torch.Generator().manual_seed(seed))]
        assert [items for items, _, _ in World().epoch_batches(n, b, torch.Generator().manual_seed(seed))] == want
        for size in (2, 3):
            parts = [World(rank=r, size=size).epoch_batches(n, b, torch.Generator().manual_seed(seed))
                     for r in range(size)]
            for j, batch in enumerate(want):
                got = [p[j] for p in parts]
                assert sum((items[:real] for items, real, _ in got), []) == batch  # contiguous slices, in order
                assert all(total == len(batch) for _, _, total in got)
                # every rank steps (DDP needs it): an empty slice carries one item of weight 0
                assert all(len(items) >= 1 and (real == len(items) or real == 0) for items, real, _ in got)
                assert sum(World(rank=r, size=size).share(real, len(batch)) for r, (_, real, _) in
                           enumerate(got)) == pytest.approx(size)


def test_share_weights_give_the_global_mean_gradient() -> None:
    """Hand-made oracle: DDP's mean of the ranks' weighted gradients equals the gradient of the global mean,
    for uneven slices too (5 items over 2 ranks: 3 + 2; 1 item over 2 ranks: 1 + a padding item)."""
    torch.manual_seed(0)
    w0 = torch.randn(3)
    for n in (5, 1):
        x, y = torch.randn(n, 3), torch.randn(n)
        w = w0.clone().requires_grad_(True)
        ((x @ w - y) ** 2).mean().backward()
        want = w.grad.clone()
        grads = []
        for r in range(2):
            idx = np.array_split(np.arange(n), 2)[r].tolist()
            real = len(idx)
            idx = idx or [0]
            w = w0.clone().requires_grad_(True)
            (((x[idx] @ w - y[idx]) ** 2).mean() * World(rank=r, size=2).share(real, n)).backward()
            grads.append(w.grad)
        assert torch.allclose(sum(grads) / 2, want, atol=1e-6)


def test_world_from_env() -> None:
    assert world_from_env({}) == World(0, 1, 0)
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == World(2, 4, 0)
    with pytest.raises(LiidError, match="RANK 4 is not in a world of WORLD_SIZE 4"):
        world_from_env({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(LiidError, match="must be integers"):
        world_from_env({"WORLD_SIZE": "two"})


def test_two_processes_train_the_one_process_run(one_and_two) -> None:
    one, two = one_and_two
    a, b = records(one, "step"), records(two, "step")
    assert len(a) == len(b) == 2 * 3  # 11 images, global batch 4: 4 + 4 + 3 per epoch
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([r["loss"] for r in records(two, "epoch")],
                               [r["loss"] for r in records(one, "epoch")], rtol=1e-4, atol=1e-6)
    # it learns: the second epoch's loss is below the first's, in both
    assert records(two, "epoch")[1]["loss"] < records(two, "epoch")[0]["loss"]
    ta, tb = json.loads((one / "train.json").read_text()), json.loads((two / "train.json").read_text())
    assert (ta["processes"], tb["processes"]) == (1, 2)
    assert tb["finished"] and tb["final"]["train_map"] == pytest.approx(ta["final"]["train_map"], abs=1e-3)
    sa = torch.load(one / "checkpoint.pt", weights_only=False)["model"]
    sb = torch.load(two / "checkpoint.pt", weights_only=False)["model"]
    assert sa.keys() == sb.keys()  # the bare model: no DDP prefix
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-3, atol=1e-5)


def test_rank_0_alone_writes(one_and_two) -> None:
    _, two = one_and_two
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint.pt", "log.jsonl", "loss.png", "train.json"]


@pytest.mark.usefixtures("one_thread")  # the torchrun processes' thread count: the same sums to the last bit
def test_resume_under_another_world_size(syn, one_and_two, tmp_path, monkeypatch) -> None:
    """Epoch 1 on one process (stopped after its checkpoint), epoch 2 resumed on 2: the uninterrupted run."""
    import liid.training.train_cls as tc
    from liid.datasets import open_dataset

    one, _ = one_and_two
    out = tmp_path / "mixed"
    real = tc.write_json

    def stop(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt  # after epoch 1's checkpoint, log and plot

    monkeypatch.setattr(tc, "write_json", stop)
    with pytest.raises(KeyboardInterrupt):
        tc.train_classifier(open_dataset(syn), out, tc.TrainClsConfig(size=64, batch_size=4, device="cpu", seed=3,
                                                                      lr=0.02, epochs=2),
                            progress=False, echo=lambda s: None)
    monkeypatch.setattr(tc, "write_json", real)
    res = liid("train-cls", syn, "--out", out, "--epochs", "2", *CLS, "--resume", procs=2)
    assert "resuming after epoch 1/2" in res.stdout
    np.testing.assert_allclose([r["loss"] for r in records(out, "step")], [r["loss"] for r in records(one, "step")],
                               rtol=1e-4, atol=1e-6)
    assert json.loads((out / "train.json").read_text())["finished"]


def test_an_error_is_one_line_on_every_rank(syn, one_and_two) -> None:
    """Rank 0's refusal (the folder exists) ends every process with it, none left waiting."""
    _, two = one_and_two
    res = liid("train-cls", syn, "--out", two, "--epochs", "2", *CLS, procs=2, check=False)
    assert res.returncode != 0
    assert "output exists; pass --resume" in res.stderr + res.stdout


@pytest.fixture(scope="module")
def mil_inputs(syn, tmp_path_factory) -> Path:
    from test_train_mil import write_store

    from liid.datasets import open_dataset

    return write_store(tmp_path_factory.mktemp("milp") / "props", open_dataset(syn))


MIL = ["--alpha", "0", "--size", "64", "--device", "cpu", "--lr", "0.005", "--seed", "1"]


def test_train_mil_on_two_processes_takes_two_images_per_step(syn, mil_inputs, tmp_path) -> None:
    out = tmp_path / "mil2"
    liid("train-mil", syn, "--proposals", mil_inputs, "--out", out, "--epochs", "2", *MIL, procs=2)
    steps, epochs = records(out, "step"), records(out, "epoch")
    images = json.loads((out / "train.json").read_text())["images"]
    assert len(steps) == 2 * ((images + 1) // 2)  # 2 images per step, the last one short when odd
    assert all(np.isfinite(r["loss"]) for r in steps)
    assert epochs[1]["loss"] < epochs[0]["loss"]  # it learns
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "log.jsonl", "loss.png", "train.json"]
    rec = json.loads((out / "train.json").read_text())
    assert rec["finished"] and rec["processes"] == 2
    centres = torch.load(out / "checkpoint.pt", weights_only=False)["model"]["centres"]
    assert (centres.abs().sum(dim=1) > 0).sum() >= 2  # eq. 8 moved the centres of the classes seen


@pytest.mark.usefixtures("one_thread")
def test_train_mil_resumes_under_another_world_size(syn, mil_inputs, tmp_path, monkeypatch) -> None:
    """Epoch 1 on one process (one image per step), epoch 2 resumed on two (two per step)."""
    import liid.training.train_mil as tm
    from liid.datasets import open_dataset

    out = tmp_path / "mixed"
    liid("train-mil", syn, "--proposals", mil_inputs, "--out", tmp_path / "one", "--epochs", "2", *MIL)
    real = tm.write_json

    def stop(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt  # after epoch 1's checkpoint and log

    monkeypatch.setattr(tm, "write_json", stop)
    with pytest.raises(KeyboardInterrupt):
        tm.train_mil(open_dataset(syn), mil_inputs, out, tm.TrainMilConfig(alpha=0, size=64, device="cpu", lr=0.005,
                                                                            seed=1, epochs=2),
                     progress=False, echo=lambda s: None)
    monkeypatch.setattr(tm, "write_json", real)
    res = liid("train-mil", syn, "--proposals", mil_inputs, "--out", out, "--epochs", "2", *MIL, "--resume", procs=2)
    assert "resuming after epoch 1/2" in res.stdout
    steps = records(out, "step")
    one = records(tmp_path / "one", "step")
    images = json.loads((out / "train.json").read_text())["images"]
    assert len(steps) == images + (images + 1) // 2  # one image per step, then two
    np.testing.assert_allclose([r["loss"] for r in steps[:images]], [r["loss"] for r in one[:images]], rtol=1e-5)
    assert json.loads((out / "train.json").read_text())["finished"]


@pytest.mark.usefixtures("one_thread")
def test_extract_on_two_processes_is_the_one_process_store(syn, mil_inputs, tmp_path) -> None:
    from liid.datasets import open_dataset
    from liid.training.train_mil import TrainMilConfig, train_mil

    mil = tmp_path / "mil"
    train_mil(open_dataset(syn), mil_inputs, mil, TrainMilConfig(alpha=0, size=64, device="cpu", epochs=1),
              progress=False, echo=lambda s: None)
    common = ["--proposals", mil_inputs, "--mil", mil, "--batch-images", "1", "--device", "cpu"]
    liid("extract", syn, *common, "--out", tmp_path / "one")
    liid("extract", syn, *common, "--out", tmp_path / "two", procs=2)
    for name in ("features", "probs", "proposal_image", "proposal_index", "image_labels"):
        np.testing.assert_array_equal(np.load(tmp_path / "two" / f"{name}.npy"),
                                      np.load(tmp_path / "one" / f"{name}.npy"), err_msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mil", "one", "two"]  # the parts folder is gone


DEEPLAB = ["--backbone", "resnet50", "--from-scratch", "--crop", "64", "--batch-size", "4", "--device", "cpu",
           "--eval-every", "0", "--seed", "1"]


def test_train_deeplab_on_two_processes(syn, tmp_path) -> None:
    """The global batches of one process, 2 images per rank; rank 0 writes a bare checkpoint one process resumes.
    (Its trained BatchNorms see each rank's 2 images on CPU, so the losses are close to one process's, not equal;
    on CUDA they are SyncBatchNorm.)"""
    masks = syn / "SegmentationClass"
    liid("train-deeplab", syn, "--masks", masks, "--out", tmp_path / "one", "--epochs", "1", *DEEPLAB)
    liid("train-deeplab", syn, "--masks", masks, "--out", tmp_path / "two", "--epochs", "1", *DEEPLAB, procs=2)
    a, b = records(tmp_path / "one", "step"), records(tmp_path / "two", "step")
    assert len(a) == len(b) >= 2 and [r["lr"] for r in a] == [r["lr"] for r in b]
    assert all(np.isfinite(r["loss"]) for r in b)
    np.testing.assert_allclose([r["loss"] for r in b][:1], [r["loss"] for r in a][:1], rtol=0.05)  # same init
    rec = json.loads((tmp_path / "two" / "train.json").read_text())
    assert rec["processes"] == 2 and rec["finished"]
    assert not any(k.startswith("module.") for k in torch.load(tmp_path / "two" / "checkpoint.pt",
                                                               weights_only=False)["model"])
    res = liid("train-deeplab", syn, "--masks", masks, "--out", tmp_path / "two", "--epochs", "1", "--resume",
               *DEEPLAB)  # one process loads the two's checkpoint
    assert "already trained for 1 epochs" in res.stdout + res.stderr
    res = liid("train-deeplab", syn, "--masks", masks, "--out", tmp_path / "bad", "--epochs", "1",
               *DEEPLAB[:-6], "--batch-size", "2", "--eval-every", "0", procs=2, check=False)
    assert res.returncode != 0 and "at least 2 images per process" in res.stderr
    assert not (tmp_path / "bad").exists()


def test_train_maskrcnn_on_two_processes(syn, tmp_path) -> None:
    from test_maskrcnn import pseudo_json

    pseudo_json(syn, tmp_path / "pseudo.json")
    fast = ["--from-scratch", "--min-size", "64", "--max-size", "96", "--batch-size", "2", "--device", "cpu",
            "--eval-every", "0", "--epochs", "1"]
    liid("train-maskrcnn", syn, "--train-json", tmp_path / "pseudo.json", "--out", tmp_path / "two", *fast, procs=2)
    rec = json.loads((tmp_path / "two" / "train.json").read_text())
    steps = records(tmp_path / "two", "step")
    assert rec["processes"] == 2 and rec["finished"] and len(steps) == rec["iterations_per_epoch"]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in steps)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "log.jsonl", "loss.png",
                                                                      "train.json"]
