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
from liid.graph.parallel import run_tasks
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
