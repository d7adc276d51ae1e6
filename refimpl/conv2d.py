"""2-D convolution, stride 1, the readable way: gather windows, one tensor product."""
import numpy as np


def conv2d(x, w, b=None, pad=0, dilation=1):
    """out[n, co, oy, ox] = b[co] + sum_{ci, ky, kx} w[co, ci, ky, kx] * xp[n, ci, oy + ky*d, ox + kx*d]

    x:   [N, C_in, H, W] float32
    w:   [C_out, C_in, K, K]
    b:   [C_out] or None
    xp:  x zero-padded by `pad` on every side
    out: [N, C_out, H + 2*pad - d*(K-1), W + 2*pad - d*(K-1)]
    """
    n, c_in, h, width = x.shape
    c_out, w_c_in, k, k2 = w.shape
    if w_c_in != c_in or k != k2:
        raise ValueError(f"conv2d: input {x.shape} does not fit weight {w.shape}")
    span = dilation * (k - 1) + 1                      # receptive field of one output
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    # windows[n, ci, oy, ox, ky, kx] = xp[n, ci, oy + ky*d, ox + kx*d]  (a view, no copy)
    windows = np.lib.stride_tricks.sliding_window_view(xp, (span, span), axis=(2, 3))
    windows = windows[..., ::dilation, ::dilation]
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))   # [N, OH, OW, C_out]
    out = out.transpose(0, 3, 1, 2)
    if b is not None:
        out = out + b.reshape(1, c_out, 1, 1)
    return np.ascontiguousarray(out, dtype=np.float32)
