"""One picture of a forward pass: the chip, each block's feature maps, the three heads' answers (matplotlib)."""
import numpy as np

from . import spec

BLOCKS_DRAWN = ("stem_fine", "stem_wide", "stem_dilated", "gender_branch", "age_branch", "top", "low_branch")
HEADS = (("virtual", "age_virtual", "gender_virtual"), ("top", "age_final", "gender_final"),
         ("low", "age_low", "gender_low"), ("ensemble", "age", "gender"))


def channel_grid(maps, gap=1):
    """[C, H, W] -> one 2-D image: the channels tiled in rows, each scaled to [0, 1] on its own (NaN between)."""
    c, h, w = maps.shape
    cols = int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, np.float32)
    for i, m in enumerate(maps):
        low, high = float(m.min()), float(m.max())
        y, x = (i // cols) * (h + gap), (i % cols) * (w + gap)
        grid[y:y + h, x:x + w] = (m - low) / (high - low) if high > low else 0.5
    return grid


class MissingMatplotlib(RuntimeError):
    pass


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend; MissingMatplotlib (one line, naming the extra) without it."""
    try:
        import matplotlib
    except ImportError:
        raise MissingMatplotlib("--png needs matplotlib: pip install 'agegender-kit[plot]' (or matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_layers(image, trace, path, title=""):
    """Write a PNG to `path`: `image` (the network's input as [H, W, 3] in [0, 1]), every block's output channels
    from `trace` (Model.trace of that one image) and the heads' answers."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 5, figsize=(17, 7.5))
    panels = iter(axes.ravel())
    ax = next(panels)
    ax.imshow(image)
    ax.set_title(f"input {image.shape[1]}x{image.shape[0]}", fontsize=9)
    for name in BLOCKS_DRAWN:
        block = spec.BLOCK_BY_NAME[name]
        maps = trace[block.output][0]
        ax = next(panels)
        ax.imshow(channel_grid(maps), cmap="viridis", interpolation="nearest")
        ax.set_title(f"{name}: {block.output.split('.')[1]}\n{maps.shape[0]} channels of "
                     f"{maps.shape[1]}x{maps.shape[2]}", fontsize=9)
    labels = [head for head, _, _ in HEADS]
    for ax, key, what in ((next(panels), 1, "age (years)"), (next(panels), 2, "P(male)")):
        values = [float(trace[names[key]][0, 0]) for names in HEADS]
        bars = ax.barh(labels, values, color=["#888"] * 3 + ["#c44"])
        ax.bar_label(bars, fmt="%.3g" if key == 2 else "%.1f", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{what} by head", fontsize=9)
        if key == 2:
            ax.set_xlim(0, 1.15)
    for ax in axes.ravel()[:8]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "refimpl trace: each block's output channels (each scaled to its own range)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
