"""2-D convolution, stride 1, the readable way: gather shifted copies (im2col), one matrix product."""
import numpy as np

IMAGES_PER_PRODUCT = 8      # im2col a few images at a time: the column buffer stays a few MB


def conv2d(x, w, b=None, pad=0, dilation=1):
    """out[n, co, oy, ox] = b[co] + sum_{ci, ky, kx} w[co, ci, ky, kx] * xp[n, ci, oy + ky*d, ox + kx*d]

    x:    [N, C_in, H, W] float32
    w:    [C_out, C_in, K, K]
    b:    [C_out] or None
    xp:   x zero-padded by `pad` on every side
    out:  [N, C_out, OH, OW], OH = H + 2*pad - d*(K-1), OW likewise

    Internally channels-last: cols[n, oy, ox, ky, kx, ci] = xp[n, oy + ky*d, ox + kx*d, ci] is filled
    by K*K block copies, then cols [N*OH*OW, K*K*C_in] @ w as [K*K*C_in, C_out] is the convolution.
    """
    n, c_in, h, width = x.shape
    c_out, w_c_in, k, k2 = w.shape
    if w_c_in != c_in or k != k2:
        raise ValueError(f"conv2d: input {x.shape} does not fit weight {w.shape}")
    out_h, out_w = h + 2 * pad - dilation * (k - 1), width + 2 * pad - dilation * (k - 1)
    xp = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))    # [N, H+2p, W+2p, C_in]
    w_matrix = w.transpose(2, 3, 1, 0).reshape(k * k * c_in, c_out)                   # rows ordered (ky, kx, ci)
    out = np.empty((n, out_h, out_w, c_out), np.float32)
    cols = np.empty((min(n, IMAGES_PER_PRODUCT), out_h, out_w, k, k, c_in), np.float32)
    for start in range(0, n, IMAGES_PER_PRODUCT):
        m = min(IMAGES_PER_PRODUCT, n - start)
        for ky in range(k):
            for kx in range(k):
                in_y, in_x = ky * dilation, kx * dilation
                cols[:m, :, :, ky, kx] = xp[start:start + m, in_y:in_y + out_h, in_x:in_x + out_w]
        out[start:start + m] = (cols[:m].reshape(-1, k * k * c_in) @ w_matrix).reshape(m, out_h, out_w, c_out)
    if b is not None:
        out += b
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
