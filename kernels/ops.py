"""refimpl's operations with refimpl's names and signatures, on a backend's fused conv kernel.

Each backend module (numba_backend.py, cython_backend.py) binds these to its own compiled
`conv_layer` with `bind(backend)`, so `kernels.numba_backend.conv2d` and `refimpl.conv2d.conv2d`
can be read and tested side by side. NCHW in and out like refimpl; inside, one NHWC copy with a
zero border per call. These wrappers are for tests and single-op benchmarks: the Model runs the
whole network in one compiled call instead.

Fused operations, not in refimpl (their reference is the composition of refimpl's ops):
    conv_bn_leaky(x, w, scale, bias, mean, var, eps, alpha, pad=0, dilation=1)
        = leaky_relu(batch_norm(conv2d(x, w, pad=pad, dilation=dilation), scale, bias, mean, var, eps), alpha)
    conv_bn_leaky_pool(...) = max_pool2x2(conv_bn_leaky(...))
    conv_bias_leaky(x, w, b, alpha, pad=0, dilation=1, pool=False, winograd=False): the kernel itself, BatchNorm
        already folded; winograd=True runs the Winograd F(2x2, 3x3) form the network uses for its 3x3 stages.

The cheap element-wise and head operations (batch_norm, leaky_relu, max_pool2x2, global_avg_pool,
fully_connected, sigmoid, concat, ensemble) are refimpl's own, visibly: in the network they are fused
into the conv stages or run in the compiled heads, and alone they are memory-bound NumPy one-liners.
"""
import numpy as np

from refimpl.batch_norm import batch_norm
from refimpl.concat import concat
from refimpl.ensemble import ensemble
from refimpl.fully_connected import fully_connected
from refimpl.global_avg_pool import global_avg_pool
from refimpl.leaky_relu import leaky_relu
from refimpl.max_pool import max_pool2x2
from refimpl.sigmoid import sigmoid

from . import plan as planning

__all__ = ["conv2d", "conv_bias_leaky", "conv_bn_leaky", "conv_bn_leaky_pool", "batch_norm", "leaky_relu",
           "max_pool2x2", "global_avg_pool", "fully_connected", "sigmoid", "concat", "ensemble"]


def _conv_bias_leaky(conv_layer, x, w, b, alpha, pad=0, dilation=1, pool=False, winograd=False):
    """NCHW conv + bias + Leaky-ReLU(alpha) (+ max pool 2x2) through one backend's conv_layer.
    winograd=True: the Winograd F(2x2, 3x3) path of the network's 3x3 stages (ValueError where it does not apply)."""
    x = np.asarray(x, np.float32)
    w = np.asarray(w, np.float32)
    if x.ndim != 4 or w.ndim != 4 or w.shape[1] != x.shape[1] or w.shape[2] != w.shape[3]:
        raise ValueError(f"conv2d: input {x.shape} does not fit weight {w.shape}")
    n, c_in, h, width = x.shape
    c_out, _, k, _ = w.shape
    pad, dilation = int(pad), int(dilation)
    oh, ow = h + 2 * pad - dilation * (k - 1), width + 2 * pad - dilation * (k - 1)
    if oh < 1 or ow < 1 or pad < 0 or dilation < 1:
        raise ValueError(f"conv2d: input {x.shape}, weight {w.shape}, pad {pad}, dilation {dilation}: empty output")
    b = None if b is None else np.asarray(b, np.float32)
    if winograd:
        if not (k == 3 and dilation == 1 and pad == 1 and oh % 2 == 0 and ow % 2 == 0):
            raise ValueError(f"conv2d: Winograd F(2x2, 3x3) needs a 3x3 kernel, dilation 1, pad 1 and an even output "
                             f"size; got weight {w.shape}, dilation {dilation}, pad {pad}, output {oh}x{ow}")
        packed, bias = planning.winograd_weights(w, b)
    else:
        packed, bias = planning.pack_weights(w, b)
    cbuf = packed.shape[-1]
    ph, pw = (oh // 2, ow // 2) if pool else (oh, ow)
    # channels padded to whole vectors: the Winograd input transform reads 8 channels at a time
    src = np.zeros((h + 2 * pad, width + 2 * pad, planning.round_up(c_in, planning.LANES)), np.float32)
    dst = np.empty((ph, pw, cbuf), np.float32)
    stage = np.zeros(1, planning.STAGE)
    algo = planning.WINOGRAD if winograd else planning.DIRECT
    planning.fill(stage[0], src_off=0, src_wp=width + 2 * pad, src_c=src.shape[2], src_p=pad, ci0=0, cin=c_in,
                  dst_off=0, dst_wp=pw, dst_c=cbuf, dst_p=0, co0=0, cbuf=cbuf, k=k, dil=dilation, pad=pad,
                  pool=int(pool), oh=oh, ow=ow, w_off=0, b_off=0, algo=algo, alpha=alpha)
    scratch = np.zeros(planning.stage_scratch(algo, pool, ow, c_in, cbuf), np.float32)
    out = np.empty((n, c_out, ph, pw), np.float32)
    flat_w = packed.ravel()
    for i in range(n):
        src[pad: pad + h, pad: pad + width, :c_in] = x[i].transpose(1, 2, 0)
        if ph and pw:
            conv_layer(src.ravel(), dst.ravel(), stage, flat_w, bias, scratch)
        out[i] = dst[:, :, :c_out].transpose(2, 0, 1)
    return out


def bind(conv_layer):
    """The operations above on one backend's conv_layer -> {name: function}."""

    def conv2d(x, w, b=None, pad=0, dilation=1):
        """refimpl.conv2d.conv2d: [N, C_in, H, W] * [C_out, C_in, K, K] (+ b) -> [N, C_out, OH, OW]."""
        return _conv_bias_leaky(conv_layer, x, w, b, 1.0, pad, dilation)      # Leaky-ReLU(1) is the identity

    def conv_bias_leaky(x, w, b, alpha, pad=0, dilation=1, pool=False, winograd=False):
        """leaky_relu(conv2d(x, w, b, pad, dilation), alpha), then max_pool2x2 if pool; the network's stage kernel
        (winograd=True: its Winograd F(2x2, 3x3) form, for 3x3, pad 1, dilation 1, even output sizes)."""
        return _conv_bias_leaky(conv_layer, x, w, b, alpha, pad, dilation, pool, winograd)

    def conv_bn_leaky(x, w, scale, bias, mean, var, eps, alpha, pad=0, dilation=1):
        """leaky_relu(batch_norm(conv2d(x, w, pad=pad, dilation=dilation), scale, bias, mean, var, eps), alpha)"""
        wf, bf = planning.fold_batch_norm(np.asarray(w, np.float32), scale, bias, mean, var, eps)
        return _conv_bias_leaky(conv_layer, x, wf, bf, alpha, pad, dilation)

    def conv_bn_leaky_pool(x, w, scale, bias, mean, var, eps, alpha, pad=0, dilation=1):
        """max_pool2x2(conv_bn_leaky(...)): an odd last row or column is dropped, as refimpl does."""
        wf, bf = planning.fold_batch_norm(np.asarray(w, np.float32), scale, bias, mean, var, eps)
        return _conv_bias_leaky(conv_layer, x, wf, bf, alpha, pad, dilation, pool=True)

    return {"conv2d": conv2d, "conv_bias_leaky": conv_bias_leaky, "conv_bn_leaky": conv_bn_leaky,
            "conv_bn_leaky_pool": conv_bn_leaky_pool, "batch_norm": batch_norm, "leaky_relu": leaky_relu,
            "max_pool2x2": max_pool2x2, "global_avg_pool": global_avg_pool, "fully_connected": fully_connected,
            "sigmoid": sigmoid, "concat": concat, "ensemble": ensemble}
