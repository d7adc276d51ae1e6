"""2-D convolution, stride 1, as its definition: one product per kernel tap, shifted and accumulated."""
import numpy as np


def conv2d(x, w, b=None, pad=0, dilation=1):
    """out[n, co, oy, ox] = b[co] + sum_{ky, kx} sum_{ci} w[co, ci, ky, kx] * xp[n, ci, oy + ky*d, ox + kx*d]

    x:    [N, C_in, H, W] float32
    w:    [C_out, C_in, K, K]
    b:    [C_out] or None
    xp:   x zero-padded by `pad` on every side
    out:  [N, C_out, OH, OW], OH = H + 2*pad - d*(K-1), OW likewise

    For each tap (ky, kx) the input window shifted by (ky*d, kx*d) times the tap's [C_in, C_out] matrix is
    added to the output (channels last inside, so each tap is one matrix product over C_in).
    """
    n, c_in, h, width = x.shape
    c_out, w_c_in, k, k2 = w.shape
    if w_c_in != c_in or k != k2:
        raise ValueError(f"conv2d: input {x.shape} does not fit weight {w.shape}")
    out_h, out_w = h + 2 * pad - dilation * (k - 1), width + 2 * pad - dilation * (k - 1)
    xp = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))    # [N, H+2p, W+2p, C_in]
    out = np.zeros((n, out_h, out_w, c_out), np.float32)
    for ky in range(k):
        for kx in range(k):
            in_y, in_x = ky * dilation, kx * dilation
            out += xp[:, in_y:in_y + out_h, in_x:in_x + out_w] @ w[:, :, ky, kx].T       # [.., C_in] @ [C_in, C_out]
    if b is not None:
        out += b
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
