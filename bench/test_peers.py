"""The peers (bench/peers) in the whole-network groups of test_network.py: OpenVINO, ncnn, LiteRT and PyTorch
beside the kernels at each batch and thread count, each checked against the golden outputs first (that call is
also the warm-up, and torch.compile's compile), skipped with the reason where not installed.

    pytest bench/test_network.py bench/test_peers.py --benchmark-only --benchmark-group-by=group
    AGEGENDER_PEERS=all pytest bench/test_peers.py --benchmark-only     # + torch.compile (slow to compile)

AGEGENDER_PEERS takes what `python -m bench --peers` takes (default: all but torch.compile). Peers that are
not fp32-equivalent (ncnn's fp16 default, OpenVINO's bf16 default) go to their own groups ("..., not fp32"),
never beside the fp32 rows. ncnn has no batch axis: its batch-N rows run N extractors, one per image.
"""
import functools
import os

import pytest

from bench import peers
from bench.conftest import BATCHES, MODEL, THREADS, conditions
from refimpl import golden

SELECTED = peers.select(os.environ.get("AGEGENDER_PEERS", "default"))


@functools.lru_cache(maxsize=None)
def _peer(name, threads):
    try:
        return peers.make_runner(name, MODEL, threads, {"tflite": os.environ.get("AGEGENDER_TFLITE")})
    except peers.Unavailable as exc:
        return exc


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"t{t}")
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("peer", SELECTED)
def test_network_peer(benchmark, reference, peer, batch, threads):
    runner = _peer(peer, threads)
    if isinstance(runner, Exception):
        pytest.skip(f"{peers.LABELS[peer]} not available: {runner}")
    x, expected = reference.batch(batch)
    outputs = runner.run(x)                                  # the check, and the warm-up
    if expected is not None:
        reports = golden.check_outputs(outputs, expected, runner.tolerance)
        assert not reports, f"{peer}, batch {batch}, {threads} thread(s): " + "; ".join(reports)
    benchmark.group = f"network batch {batch:>2}, {threads} thread(s)" + ("" if runner.fp32 else ", not fp32")
    conditions(benchmark, backend=peer, batch=batch, threads=threads, isa=runner.isa, fp32=runner.fp32,
               verified=reference.source or "unverified", images_per_call=batch)
    benchmark(runner.run, x)
