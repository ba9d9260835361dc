"""A real 2-node Ray cluster on localhost (``ray start --head`` + a second node, started and stopped here):
solve-cut and sharded build-graph on it give exactly the serial results; tasks land on both nodes; a worker
killed mid-task is retried, and past the retries the run stops with one line, never a partial result."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liid.cli import main
from liid.errors import LiidError
from liid.graph.feature_store import write_feature_store
from liid.parallel import run_tasks
from liid.synthetic_features import SyntheticSpec, make_feature_store

pytest.importorskip("ray")

RAY = str(Path(sys.executable).with_name("ray"))
# A head enables token authentication unless told not to; Ray reads the mode once, at import, and this
# process's drivers (run_tasks, the commands) may have imported it already: a loopback cluster without tokens
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
NODE = ["--num-cpus", "1", "--object-store-memory", str(150 * 2**20), "--disable-usage-stats"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive_nodes(address: str) -> int:
    code = (f"import ray; ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    return int(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else 0


@pytest.fixture(scope="module")
def cluster() -> str:
    """The head and one more node, 1 CPU each; stopped (every Ray process of this machine) afterwards."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false", *NODE],
                       check=True, capture_output=True, env=ENV, timeout=180)
        subprocess.run([RAY, "start", "--address", address, *NODE], check=True, capture_output=True, env=ENV,
                       timeout=180)
        deadline = time.monotonic() + 120
        while alive_nodes(address) < 2:
            assert time.monotonic() < deadline, "the second Ray node did not join"
            time.sleep(1)
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=ENV, timeout=180)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    fs, _ = make_feature_store(SyntheticSpec(images=300, proposals_per_image=10, classes=6, dim=64, seed=2))
    path = tmp_path_factory.mktemp("cluster") / "store"
    write_feature_store(path, fs)
    return path


def liid(*args: object) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def graph_arrays(path: Path) -> dict[str, np.ndarray]:
    return {f.stem: np.load(f) for f in sorted(path.glob("*.npy"))}


def test_tasks_run_on_both_nodes(cluster) -> None:
    def node(_):
        import ray

        time.sleep(1.0)  # one CPU per node: a busy head leaves the next task to the other node
        return ray.get_runtime_context().get_node_id()

    nodes = run_tasks(node, list(range(8)), backend="ray", ray_address=cluster, progress=False)
    assert len(set(nodes)) == 2


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_sharded_build_graph_on_the_cluster_equals_serial(cluster, store, tmp_path, method) -> None:
    common = ["--knn", method, "--nlist", "16", "--nprobe", "4", "--pca-dim", "32"]
    liid("build-graph", store, "--out", tmp_path / "serial", *common, "--shards", "4")
    out = liid("build-graph", store, "--out", tmp_path / "ray", *common, "--shards", "4", "--backend", "ray",
               "--ray-address", cluster)
    assert "shards=4 on ray" in out
    serial, ray = graph_arrays(tmp_path / "serial"), graph_arrays(tmp_path / "ray")
    assert serial.keys() == ray.keys() and "edges" in serial
    for name in serial:
        np.testing.assert_array_equal(ray[name], serial[name], err_msg=name)
    if method == "exact":  # the shards' merge is the search over the whole store
        liid("build-graph", store, "--out", tmp_path / "whole", *common)
        np.testing.assert_array_equal(graph_arrays(tmp_path / "whole")["edges"], serial["edges"])
    assert not list(tmp_path.glob(".*knn-*"))  # the scratch rows are gone


def test_solve_cut_on_the_cluster_equals_serial(cluster, store, tmp_path) -> None:
    liid("build-graph", store, "--out", tmp_path / "g")
    liid("solve-cut", "--graph", tmp_path / "g", "--out", tmp_path / "serial", "--chunk-nodes", "50", "--quiet")
    liid("solve-cut", "--graph", tmp_path / "g", "--out", tmp_path / "ray", "--chunk-nodes", "50", "--quiet",
         "--backend", "ray", "--ray-address", cluster)
    a, b = np.load(tmp_path / "serial" / "labels.npy"), np.load(tmp_path / "ray" / "labels.npy")
    assert len(np.unique(a)) > 2
    np.testing.assert_array_equal(b, a)
    assert (tmp_path / "ray" / "components.jsonl").read_text().count("\n") == \
        (tmp_path / "serial" / "components.jsonl").read_text().count("\n")


def _slow_task(marks: str):
    """A task that records its attempt (pid) and, on its first attempt at task 0, waits to be killed."""

    def task(i: int) -> int:
        folder = Path(marks)
        first = not list(folder.glob(f"{i}-*"))
        (folder / f"{i}-{os.getpid()}").touch()
        if i == 0 and first:
            time.sleep(60)
        return i * i

    return task


def _kill_first_attempt(marks: Path) -> threading.Thread:
    def kill() -> None:
        deadline = time.monotonic() + 120
        while not list(marks.glob("0-*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        for f in marks.glob("0-*"):
            os.kill(int(f.name.split("-")[1]), signal.SIGKILL)

    t = threading.Thread(target=kill, daemon=True)
    t.start()
    return t


def test_a_killed_worker_is_retried(cluster, tmp_path) -> None:
    killer = _kill_first_attempt(tmp_path)
    t0 = time.monotonic()
    out = run_tasks(_slow_task(str(tmp_path)), list(range(6)), backend="ray", ray_address=cluster, progress=False)
    killer.join()
    assert out == [i * i for i in range(6)]  # whole, in task order
    assert len(list(tmp_path.glob("0-*"))) == 2  # killed once, run again
    assert time.monotonic() - t0 < 60  # the retry did not wait for the killed attempt


def test_a_killed_worker_past_its_retries_is_one_clear_error(cluster, tmp_path) -> None:
    killer = _kill_first_attempt(tmp_path)
    with pytest.raises(LiidError, match=r"task 1 of 6 failed on the Ray cluster \(.*\); nothing was written"):
        run_tasks(_slow_task(str(tmp_path)), list(range(6)), backend="ray", ray_address=cluster, progress=False,
                  retries=0)
    killer.join()


def test_a_wrong_address_is_one_line(tmp_path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(LiidError, match=f"--ray-address 127.0.0.1:{port}: cannot join the Ray cluster"):
        run_tasks(abs, [1], backend="ray", ray_address=f"127.0.0.1:{port}", progress=False)


# --- proposals: one Ray task per image, the same resumable work folder ----------------------------------------


@pytest.fixture
def images(tmp_path) -> Path:
    from PIL import Image
    from test_proposals_cli import IDS, shapes_image

    d = tmp_path / "images"
    d.mkdir()
    for k, i in enumerate(IDS):
        Image.fromarray(shapes_image(k)).save(d / f"{i}.jpg", quality=95)
    return d


def test_proposals_on_the_cluster_are_the_serial_store(cluster, images, tmp_path) -> None:
    from test_proposals_cli import store_files

    from liid.proposals.store import read_proposal_meta

    liid("proposals", images, "--out", tmp_path / "serial", "--top", 6)
    liid("proposals", images, "--out", tmp_path / "ray", "--top", 6, "--backend", "ray", "--ray-address", cluster)
    assert store_files(tmp_path / "ray") == store_files(tmp_path / "serial")
    assert read_proposal_meta(tmp_path / "ray")["backend"] == "ray"
    assert not (tmp_path / "ray.partial").exists()


def test_proposals_on_the_cluster_resume_an_interrupted_run(cluster, images, tmp_path, monkeypatch) -> None:
    """An interrupted serial run leaves 2 images in OUT.partial; the Ray run reuses them and does the rest."""
    from test_proposals_cli import IDS, crash_after, store_files

    from liid.proposals import generate

    real = generate.process_image
    crash_after(2, monkeypatch)
    res = CliRunner().invoke(main, ["proposals", str(images), "--out", str(tmp_path / "props"), "--top", "6"])
    assert res.exit_code != 0 and len(list((tmp_path / "props.partial" / "images").glob("*.json"))) == 2
    monkeypatch.setattr(generate, "process_image", real)
    out = liid("proposals", images, "--out", tmp_path / "props", "--top", 6, "--backend", "ray",
               "--ray-address", cluster)
    assert f"2 of {len(IDS)} images already done, reused" in out
    liid("proposals", images, "--out", tmp_path / "fresh", "--top", 6)
    assert store_files(tmp_path / "props") == store_files(tmp_path / "fresh")


def test_a_bad_image_file_on_the_cluster_is_its_one_line(cluster, images, tmp_path) -> None:
    """A task's own error (a bad imported file) comes back as the serial run's line; nothing is written."""
    from test_proposals_cli import write_prm

    src = tmp_path / "prm"
    src.mkdir()
    write_prm(src)
    (src / "img4.json").write_text("")
    res = CliRunner().invoke(main, ["proposals", str(images), "--out", str(tmp_path / "props"), "--method",
                                    "prm-json", "--from", str(src), "--backend", "ray", "--ray-address", cluster])
    assert res.exit_code != 0 and str(src / "img4.json") in res.stderr.strip().splitlines()[-1]
    assert "Traceback" not in res.output
    assert not (tmp_path / "props").exists()


# --- extract: parts of consecutive images, one Ray task each, resumable -------------------------------------


def test_extract_on_the_cluster_is_the_one_process_store_and_resumes(cluster, tmp_path) -> None:
    """Oracle: the one-process store, array for array. A part that fails (an unreadable image) stops the run
    with the serial run's line; the parts done stay in OUT.partial and the rerun reuses them."""
    from test_train_mil import write_store

    from liid.datasets import open_dataset
    from liid.datasets.synthetic import SyntheticConfig, write_synthetic
    from liid.training.train_mil import TrainMilConfig, train_mil

    syn = tmp_path / "syn"
    write_synthetic(syn, 9, seed=0, config=SyntheticConfig(size=64), progress=False)
    ds = open_dataset(syn)
    props = write_store(tmp_path / "props", ds)
    mil = tmp_path / "mil"
    train_mil(ds, props, mil, TrainMilConfig(alpha=0, size=64, device="cpu", epochs=1), progress=False,
              echo=lambda s: None)
    common = ["--proposals", props, "--mil", mil, "--batch-images", "1", "--device", "cpu"]
    liid("extract", syn, *common, "--out", tmp_path / "one")

    on_ray = [*common, "--backend", "ray", "--ray-address", cluster, "--images-per-task", "2"]
    from liid.graph.feature_store import read_feature_store

    ids = read_feature_store(tmp_path / "one").images  # the images with labels, in order
    parts = -(-len(ids) // 2)
    last = ds.info(ids[-1]).file  # in the last part
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 3])
    res = CliRunner().invoke(main, ["extract", str(syn), *map(str, on_ray), "--out", str(tmp_path / "ray")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and last.name in res.stderr
    assert not (tmp_path / "ray").exists() and (tmp_path / "ray.partial" / "settings.json").exists()
    kept = len(list((tmp_path / "ray.partial").glob("part-*.npz")))
    assert kept < parts

    last.write_bytes(good)
    out = liid("extract", syn, *on_ray, "--out", tmp_path / "ray")
    assert (f"resuming: {kept} of {parts} parts already done, reused" in out) == (kept > 0)
    for name in ("proposal_image", "proposal_index", "image_labels"):
        np.testing.assert_array_equal(np.load(tmp_path / "ray" / f"{name}.npy"),
                                      np.load(tmp_path / "one" / f"{name}.npy"), err_msg=name)
    # a Ray task runs torch on its one CPU's thread: the convolutions' sums differ from this process's in the
    # last bits (float16 features: within 2e-3, about two of their last places)
    for name in ("features", "probs"):
        np.testing.assert_allclose(np.load(tmp_path / "ray" / f"{name}.npy").astype(np.float32),
                                   np.load(tmp_path / "one" / f"{name}.npy").astype(np.float32), rtol=2e-3,
                                   atol=2e-3, err_msg=name)
    assert not (tmp_path / "ray.partial").exists()
