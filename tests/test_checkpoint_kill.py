"""fnn.checkpoint.save killed at random moments: the file is always one complete
version, and the temporary files of killed writers do not accumulate.

A server process imports fnn once, then forks writers on request; each writer
saves a ~22 MB tree over and over (versions base, base + 1, ...) until the test
kills it with SIGKILL at a random moment. Forking keeps the test fast (one
import of jax instead of one per kill).
"""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import fnn
from fnn import checkpoint

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="the writers are forked (POSIX only)"
)

N = 2_500_000  # float32 per leaf: two of them and a quarter as many int32, ~22 MB

SERVER = textwrap.dedent(
    """
    import os
    import sys

    import numpy as np

    from fnn import checkpoint

    path, n = sys.argv[1], int(sys.argv[2])


    def tree(v):
        return {
            "a": np.full(n, v, np.float32),
            "b": np.full(n, -v, np.float32),
            "c": [np.full(n // 4, v, np.int32)],
            "v": v,
        }


    for line in sys.stdin:
        base = int(line)
        pid = os.fork()
        if pid == 0:
            try:
                v = base
                while True:
                    checkpoint.save(path, tree(v), metadata={"version": v})
                    v += 1
            finally:
                os._exit(1)
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
    """
)


def tree(v):
    return {
        "a": np.full(N, v, np.float32),
        "b": np.full(N, -v, np.float32),
        "c": [np.full(N // 4, v, np.int32)],
        "v": v,
    }


def assert_one_complete_version(path):
    """The file loads, and every leaf holds the version its metadata names."""
    v = checkpoint.read_metadata(path)["version"]
    loaded = checkpoint.load(path, like=tree(0))
    assert loaded["v"] == v
    assert loaded["a"].shape == (N,) and np.all(loaded["a"] == np.float32(v))
    assert np.all(loaded["b"] == np.float32(-v))
    assert np.all(loaded["c"][0] == np.int32(v))
    return v


def temp_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "run.ckpt")


def run_kills(tmp_path, kills):
    path = tmp_path / "run.ckpt"
    save_times = []
    for _ in range(2):  # the second one is warm
        start = time.perf_counter()
        checkpoint.save(path, tree(0), metadata={"version": 0})
        save_times.append(time.perf_counter() - start)
    save_time = min(save_times[-1], 0.3)
    env = dict(os.environ, PYTHONPATH=str(Path(fnn.__file__).resolve().parents[1]))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(path), str(N)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    rng = random.Random(0)
    versions, mid_save = {0}, 0
    try:
        for i in range(1, kills + 1):
            server.stdin.write(f"{1000 * i}\n")
            server.stdin.flush()
            line = server.stdout.readline()
            assert line.strip().isdigit(), f"writer server failed: {line!r}"
            # Anywhere in the first two or three saves of this writer.
            time.sleep(rng.uniform(0.0, 2.5 * save_time))
            os.kill(int(line), signal.SIGKILL)
            assert server.stdout.readline().strip() == "reaped"
            versions.add(assert_one_complete_version(path))
            stray = temp_files(tmp_path)
            # At most the killed writer's own file: it removed its predecessors'.
            assert len(stray) <= 1, stray
            mid_save += len(stray)
    finally:
        server.kill()
        server.wait()
    assert mid_save >= 1  # some kills did land in the middle of a save
    assert len(versions) >= 2  # and some writers completed saves
    checkpoint.save(path, tree(1), metadata={"version": 1})
    assert temp_files(tmp_path) == []
    assert assert_one_complete_version(path) == 1


def test_killed_saves_leave_a_complete_file_and_no_temp_files(tmp_path):
    run_kills(tmp_path, kills=20)


@pytest.mark.slow
def test_many_killed_saves(tmp_path):
    run_kills(tmp_path, kills=100)
