"""A kernels Model shared by threads: every call gets its own workspace, so concurrent calls give
bit-identical results to the same calls made one after the other (issue 13, item 1).

Exact equality is the property: each image runs the same code in the same order whatever the thread
or the other calls in flight (see kernels/model.py), so any difference is a shared-workspace race.
"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import kernels
from conftest import ROOT, backend_param, random_batch
from refimpl import spec

N_THREADS, CALLS = 4, 50


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("backend_name", [backend_param(name) for name in kernels.BACKENDS])
def test_concurrent_forward_is_bit_identical_to_serial(reference_model_path, backend_name, threads):
    model = kernels.load(reference_model_path, backend_name, threads=threads)
    rng = np.random.default_rng(13)
    batches = [random_batch(rng, int(rng.integers(1, 9))) for _ in range(N_THREADS * CALLS)]
    serial = [model.forward(x) for x in batches]

    results = [None] * len(batches)
    errors = []
    start = threading.Barrier(N_THREADS)

    def worker(t):
        try:
            start.wait()
            for i in range(t, len(batches), N_THREADS):
                results[i] = model.forward(batches[i])
        except BaseException as exc:     # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert not errors, errors
    differ = [i for i in range(len(batches))
              if any(not np.array_equal(serial[i][name], results[i][name]) for name in spec.OUTPUT_NAMES)]
    worst = max((float(np.abs(serial[i]["age"] - results[i]["age"]).max()) for i in differ), default=0.0)
    assert not differ, (f"{len(differ)} of {len(batches)} concurrent results differ from serial "
                        f"(first {differ[:5]}, worst age error {worst:.3g} years)")


def test_run_stages_alongside_concurrent_forwards_is_unchanged(reference_model_path):
    """run_stages reads the workspace it ran in: other threads' calls must not write into it meanwhile."""
    model = kernels.load(reference_model_path, kernels.available_backends()[0], threads=1)
    x = random_batch(np.random.default_rng(3), 2)
    expected = model.run_stages(x)
    noise = [random_batch(np.random.default_rng(i), 3) for i in range(20)]
    stop, errors = threading.Event(), []

    def busy():
        try:
            while not stop.is_set():
                for batch in noise:
                    model.forward(batch)
        except BaseException as exc:
            errors.append(exc)

    others = [threading.Thread(target=busy) for _ in range(2)]
    for thread in others:
        thread.start()
    try:
        got = [model.run_stages(x) for _ in range(5)]
    finally:
        stop.set()
        for thread in others:
            thread.join()
    assert not errors, errors
    for again in got:
        for name, tensor in expected.items():
            np.testing.assert_array_equal(again[name], tensor, err_msg=name)


def run_python(code, **env):
    """Run `code` in a fresh interpreter with extra environment variables -> CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)


WORKQUEUE_CODE = """
import threading, numpy as np, kernels, numba
model = kernels.load(None, "numba", threads=2)
batches = [np.random.default_rng(i).random((i % 3 + 1, 3, 64, 64), dtype=np.float32) for i in range(40)]
serial = [model.forward(x)["age"] for x in batches]
results = [None] * len(batches)
def worker(t):
    for i in range(t, len(batches), 4):
        results[i] = model.forward(batches[i])["age"]
pool = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
[t.start() for t in pool]; [t.join() for t in pool]
print(numba.threading_layer(), sum(not np.array_equal(a, b) for a, b in zip(serial, results)))
"""


def test_numba_workqueue_layer_shared_model_neither_aborts_nor_differs():
    """numba's workqueue threading layer (no OpenMP or TBB) aborts the whole process when two threads launch
    parallel code at once; the backend serializes its parallel launches there."""
    if "numba" not in kernels.available_backends():
        pytest.skip(kernels.unavailable_reasons().get("numba"))
    done = run_python(WORKQUEUE_CODE, NUMBA_THREADING_LAYER="workqueue")
    assert done.returncode == 0 and done.stdout.split() == ["workqueue", "0"], (done.returncode, done.stdout,
                                                                               done.stderr[-2000:])


# -- thread counts the backend cannot run are refused at load, in one line (issue 13, item 12) ----------------
def test_numba_with_a_one_thread_pool_loads_and_runs_one_thread():
    """NUMBA_NUM_THREADS=1: threads=1 (and the default) load and run; 2 is refused at load, naming the limit."""
    code = ("import kernels, numpy as np\n"
            "m = kernels.load(None, 'numba', threads=1)\n"
            "print('ok', m.forward(np.zeros((3, 3, 64, 64), np.float32))['age'].shape, "
            "kernels.load(None, 'numba').threads)\n"
            "try:\n"
            "    kernels.load(None, 'numba', threads=2)\n"
            "except ValueError as exc:\n"
            "    print('refused:', exc)\n")
    if "numba" not in kernels.available_backends():
        pytest.skip(kernels.unavailable_reasons().get("numba"))
    done = run_python(code, NUMBA_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ok (3, 1) 1", done.stdout
    assert lines[1].startswith("refused: threads=2 is out of range for the numba backend: it runs 1 to 1 threads"), \
        done.stdout
    assert "NUMBA_NUM_THREADS" in lines[1] and len(lines) == 2


@pytest.mark.parametrize("backend_name", [backend_param(name) for name in kernels.BACKENDS])
def test_thread_counts_beyond_the_backend_are_refused_at_load_and_in_set_threads(backend_name):
    limit, _ = kernels.backend(backend_name).thread_limit()
    with pytest.raises(ValueError) as refused:
        kernels.load(None, backend_name, threads=limit + 1)
    message = str(refused.value)
    assert "\n" not in message and f"threads={limit + 1}" in message and backend_name in message
    assert f"1 to {limit} threads" in message
    model = kernels.load(None, backend_name, threads=1)
    for bad in (0, -1, limit + 1):
        with pytest.raises(ValueError, match=f"threads={bad} is out of range for the {backend_name} backend"):
            model.set_threads(bad)
    for bad in (2.5, 2.0, "2", True):
        with pytest.raises(ValueError, match=f"threads must be a whole number from 1 to {limit}"):
            model.set_threads(bad)
    assert model.threads == 1                       # a refused count leaves the model as it was
    assert model.set_threads(np.int64(min(limit, 2))).threads == min(limit, 2)


def test_cython_runs_more_threads_than_cpus():
    """OpenMP can: 3 threads on any machine load and give the same outputs as 1 (numba cannot exceed its pool)."""
    if "cython" not in kernels.available_backends():
        pytest.skip(kernels.unavailable_reasons().get("cython"))
    from kernels.model import default_threads

    threads = default_threads() + 1
    x = random_batch(np.random.default_rng(5), 5)
    many, one = kernels.load(None, "cython", threads=threads), kernels.load(None, "cython", threads=1)
    assert many.threads == threads
    for name, value in one.forward(x).items():
        np.testing.assert_array_equal(many.forward(x)[name], value)
        np.testing.assert_array_equal(many.forward(x[:1])[name], value[:1])
