"""The whole network: every backend x batch {1, 8, 64} x threads {1, all cores}, grouped by batch and threads."""
import pytest

from bench import backends as bk
from bench.conftest import BATCHES, THREADS, conditions
from refimpl import golden


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"t{t}")
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("backend", bk.CPU_BACKENDS)
def test_network(benchmark, make_runner, reference, backend, batch, threads):
    runner = make_runner(backend, threads)
    x, expected = reference.batch(batch)
    outputs = runner.run(x)                                  # the check, and the warm-up
    if expected is not None:
        reports = golden.check_outputs(outputs, expected, runner.tolerance)
        assert not reports, f"{backend}, batch {batch}, {threads} thread(s): " + "; ".join(reports)
    benchmark.group = f"network batch {batch:>2}, {threads} thread(s)"
    conditions(benchmark, backend=backend, batch=batch, threads=threads, isa=runner.isa,
               verified=reference.source or "unverified", images_per_call=batch)
    benchmark(runner.run, x)


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("backend", bk.GPU_BACKENDS)
def test_network_tensorrt(benchmark, make_runner, reference, backend, batch):
    runner = make_runner(backend, None)
    if runner.external:
        pytest.skip("trtexec times itself: its numbers are in python -m bench's table")
    x, expected = reference.batch(batch)
    outputs = runner.run(x)
    if expected is not None:
        reports = golden.check_outputs(outputs, expected, runner.tolerance)
        assert not reports, f"{backend}, batch {batch}: " + "; ".join(reports)
    benchmark.group = f"network batch {batch:>2}, gpu"
    conditions(benchmark, backend=backend, batch=batch, threads=None, isa=runner.isa,
               verified=reference.source or "unverified", images_per_call=batch)
    benchmark(runner.run, x)
