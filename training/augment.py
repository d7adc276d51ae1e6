"""Training augmentations on a batch of preprocessed images (float [N, 3, 64, 64] in [0, 1]).

Flip, a small shift / scale / rotation (the chips are aligned, so only a little),
and colour jitter (brightness, contrast, saturation). All on the batch at once.
"""
import math

import torch
import torch.nn.functional as F


def augment(x, generator, shift=0.06, scale=0.08, degrees=8.0, jitter=0.2):
    n = x.shape[0]

    def uniform(lo, hi):
        return torch.rand(n, generator=generator) * (hi - lo) + lo

    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    angle = uniform(-degrees, degrees) * math.pi / 180
    s = 1.0 / uniform(1 - scale, 1 + scale)
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    theta = torch.stack([torch.stack([cos, -sin, uniform(-shift, shift)], 1),
                         torch.stack([sin, cos, uniform(-shift, shift)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    gray = x.mean(dim=1, keepdim=True)
    x = gray + (x - gray) * uniform(1 - jitter, 1 + jitter)[:, None, None, None]            # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * uniform(1 - jitter, 1 + jitter)[:, None, None, None]            # contrast
    x = x * uniform(1 - jitter, 1 + jitter)[:, None, None, None]                            # brightness
    return x.clamp(0, 1)
