"""Max pooling, 2x2 window, stride 2."""


def max_pool2x2(x):
    """out[n, c, oy, ox] = max over dy, dx in {0, 1} of x[n, c, 2*oy + dy, 2*ox + dx]

    x: [N, C, H, W]; out: [N, C, H // 2, W // 2] (an odd last row or column is dropped, as ONNX does
    without ceil_mode).
    """
    n, c, h, w = x.shape
    x = x[:, :, : h - h % 2, : w - w % 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
