"""Where the time goes, batch 1, one thread: each fused kernel stage, and each refimpl op per backend.

Fused stages run alone on warm workspaces (their input is what the full forward before left there),
checked first: the stage's tensors against the reference's trace, the eight outputs against the golden
ones. Ops run on the real layer tensors of the reference's trace of golden input 0 and are checked
against oracles independent of refimpl's code, so the numpy rows (refimpl's own ops) are checked too:
conv2d against a float64 sum of shifted products within the per-element bound of bench/bounds.py, the
small ops against their formulas in float64. Groups: one per stage and one per op and layer, backends
side by side.
"""
import numpy as np
import pytest

from bench.bounds import check_bound, conv_bound
from bench.conftest import MODEL, conditions, layer_tolerance
from refimpl import golden, graph
from refimpl.batch_norm import batch_norm
from refimpl.concat import concat
from refimpl.conv2d import conv2d
from refimpl.ensemble import ensemble
from refimpl.fully_connected import fully_connected
from refimpl.global_avg_pool import global_avg_pool
from refimpl.leaky_relu import leaky_relu
from refimpl.max_pool import max_pool2x2
from refimpl.sigmoid import sigmoid

KERNEL_BACKENDS = ("numba", "cython")


def _kernels_model(backend):
    try:
        import kernels

        return kernels.load(MODEL, backend=backend, threads=1), None
    except Exception as exc:              # absent, partial or unbuilt kernels: the test says why
        return None, f"kernels backend {backend!r} not available: {type(exc).__name__}: {exc}"


def _stage_names():
    for backend in KERNEL_BACKENDS:
        model, _ = _kernels_model(backend)
        if model is not None and hasattr(model, "stage_names"):
            return model.stage_names()
    return ["(kernels not available)"]


def run_stage(model, name):
    """A callable running fused stage `name` alone: kernels.Model.run_stage where it exists, else the executor
    over that one stage (Model._run(x, i, i + 1, heads=False), what Model.time_stages times)."""
    if hasattr(model, "run_stage"):
        return lambda x: model.run_stage(x, name)
    index = model.stage_names().index(name)
    return lambda x: model._run(x, index, index + 1, False)


_MODELS = {}


@pytest.mark.parametrize("stage", _stage_names())
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_stage(benchmark, ref_trace, reference, backend, stage):
    if backend not in _MODELS:
        _MODELS[backend] = _kernels_model(backend)
    model, why = _MODELS[backend]
    if model is None:
        pytest.skip(why)
    if not hasattr(model, "run_stages") or not (hasattr(model, "run_stage") or hasattr(model, "_run")):
        pytest.skip("kernels.Model has no way to run one stage yet")
    x, trace = ref_trace
    got = model.run_stages(x)
    for tensor in stage.split("|"):
        report = golden.compare(f"{stage}: {tensor}", trace[tensor], got[tensor], layer_tolerance(trace[tensor]))
        assert report is None, report
    _, expected = reference.batch(1)
    if expected is not None:
        reports = golden.check_outputs(model.forward(x), expected)   # also leaves this input in the workspaces
        assert not reports, "; ".join(reports)
    fn = run_stage(model, stage)
    fn(x)
    benchmark.group = f"stage {stage}"
    conditions(benchmark, backend=backend, batch=1, threads=1, stage=stage,
               stage_flops=model.stage_flops().get(stage) if hasattr(model, "stage_flops") else None)
    benchmark(fn, x)


# -- refimpl's ops, per backend ------------------------------------------------------------------------------
def _conv_cases():
    return [(n.name, n.inputs[0], n.inputs[1], n.attrs["pads"][0], n.attrs["dilations"][0])
            for n in graph.nodes() if n.op == "Conv"]


def direct_conv64(x, w, pad, dilation):
    """The convolution as a float64 sum of shifted products: an oracle independent of refimpl's float32 conv2d."""
    k = w.shape[2]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = xp.shape[2] - dilation * (k - 1), xp.shape[3] - dilation * (k - 1)
    return sum(np.einsum("nchw,oc->nohw", xp[:, :, ky * dilation: ky * dilation + oh, kx * dilation: kx * dilation + ow],
                         w[:, :, ky, kx].astype(np.float64)) for ky in range(k) for kx in range(k))


# float64 oracles of the small ops (their formulas, not refimpl's code), so the numpy rows check something too
def _max_pool64(x):
    x = x[:, :, : x.shape[2] // 2 * 2, : x.shape[3] // 2 * 2]
    return np.maximum.reduce([x[:, :, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)])


def _per_channel(v):
    return np.asarray(v, np.float64)[None, :, None, None]


ORACLES = {
    "batch_norm": lambda x, scale, bias, mean, var, eps: (x - _per_channel(mean)) / np.sqrt(_per_channel(var) + eps)
    * _per_channel(scale) + _per_channel(bias),
    "leaky_relu": lambda x, alpha: np.maximum(x, 0) + alpha * np.minimum(x, 0),
    "max_pool2x2": _max_pool64,
    "concat": lambda tensors: np.concatenate(tensors, axis=1),
    "global_avg_pool": lambda x: x.astype(np.float64).sum(axis=(2, 3)) / (x.shape[2] * x.shape[3]),
    "fully_connected": lambda x, w, b: np.einsum("ni,oi->no", x.astype(np.float64), w.astype(np.float64)) + b,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x.astype(np.float64))),
    "ensemble": lambda outputs: np.mean(np.asarray(outputs, np.float64), axis=0),
}


def _op(backend, name, reference_fn):
    if backend == "numpy":
        return reference_fn
    try:
        import kernels

        module = kernels.backend(backend)
    except Exception as exc:
        pytest.skip(f"kernels backend {backend!r} not available: {exc}")
    fn = getattr(module, name, None)
    if fn is None:
        pytest.skip(f"kernels backend {backend!r} has no {name} yet")
    if fn is reference_fn:
        pytest.skip(f"{backend}'s {name} is refimpl's own function (timed in the numpy row)")
    return fn


@pytest.mark.parametrize("conv", _conv_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("backend", ("numpy", *KERNEL_BACKENDS))
def test_op_conv2d(benchmark, ref_trace, ref_model, backend, conv):
    name, source, weight, pad, dilation = conv
    fn = _op(backend, "conv2d", conv2d)
    x, trace = ref_trace
    inp = x if source == "image" else trace[source]
    w = ref_model.weights[weight]
    got = fn(inp, w, None, pad, dilation)
    # float32 (any order) against a float64 sum: within the per-element bound of bench/bounds.py, which allows
    # for two float32 sides
    report = check_bound(f"conv2d {name} vs a float64 sum", direct_conv64(inp, w, pad, dilation), got,
                         conv_bound(inp, w, None, pad, dilation))
    assert report is None, report
    benchmark.group = f"op conv2d {name} {list(inp.shape)} * {list(w.shape)}"
    conditions(benchmark, backend=backend, batch=1, threads=1, op="conv2d", layer=name,
               flops=2 * int(np.prod(w.shape)) * int(np.prod(trace[name].shape[2:])))
    benchmark(fn, inp, w, None, pad, dilation)


def _small_op_cases(model, trace):
    """(op name, refimpl function, args, expected tensor name) on representative layers."""
    w, a = model.weights, model.attrs
    bn = "stem_fine.bn1"
    return {
        "batch_norm": (batch_norm, (trace["stem_fine.conv1"], *(w[f"{bn}.{p}"] for p in
                                                               ("weight", "bias", "running_mean", "running_var")),
                                    a[bn]["epsilon"]), bn),
        "leaky_relu": (leaky_relu, (trace[bn], a["stem_fine.act1"]["alpha"]), "stem_fine.act1"),
        "max_pool2x2": (max_pool2x2, (trace["stem_fine.act1"],), "stem_fine.pool1"),
        "concat": (concat, ([trace[f"{b}.act2"] for b in ("stem_fine", "stem_wide", "stem_dilated")],), "stem"),
        "global_avg_pool": (global_avg_pool, (trace["top.act2"],), "top_head.gap"),
        "fully_connected": (fully_connected, (trace["top_head.gap"], w["top_head.fc1.weight"],
                                              w["top_head.fc1.bias"]), "top_head.fc1"),
        "sigmoid": (sigmoid, (trace["top_head.fc_gender"],), "gender_final"),
        "ensemble": (ensemble, ([trace["age_final"], trace["age_virtual"], trace["age_low"]],), "age"),
    }


SMALL_OPS = ("batch_norm", "leaky_relu", "max_pool2x2", "concat", "global_avg_pool", "fully_connected", "sigmoid",
             "ensemble")


@pytest.mark.parametrize("op", SMALL_OPS)
@pytest.mark.parametrize("backend", ("numpy", *KERNEL_BACKENDS))
def test_op(benchmark, ref_trace, ref_model, backend, op):
    x, trace = ref_trace
    reference_fn, args, expected = _small_op_cases(ref_model, trace)[op]
    fn = _op(backend, op, reference_fn)
    got = fn(*args)
    report = golden.compare(f"{op} -> {expected} vs float64 formula", ORACLES[op](*args), got,
                            layer_tolerance(trace[expected]))
    assert report is None, report
    benchmark.group = f"op {op} -> {expected}"
    conditions(benchmark, backend=backend, batch=1, threads=1, op=op, layer=expected)
    benchmark(fn, *args)
