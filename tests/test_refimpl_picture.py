"""python -m refimpl trace CHIP --png: the picture of a forward pass (refimpl/picture.py)."""
import numpy as np

from refimpl.__main__ import main
from refimpl.picture import channel_grid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_face(size=200):
    """uint8 [size, size, 3]: a drawn face (skin oval, hair, eyes, brows, nose, mouth) on a plain background, made
    here so that pictures of the network need no data set; docs/trace-layers.png is this face's trace."""
    yy, xx = np.mgrid[0:size, 0:size] / size

    def oval(cy, cx, ry, rx):
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1

    image = np.empty((size, size, 3), np.float32)
    image[:] = (150, 170, 190)                                          # background
    image[oval(0.40, 0.5, 0.36, 0.34)] = (70, 45, 30)                   # hair
    face = oval(0.52, 0.5, 0.36, 0.28)
    shade = np.clip(1.1 - 0.5 * np.abs(xx - 0.5), 0, 1)[..., None]     # lit from the front
    image[face] = ((225, 180, 150) * shade)[face]
    for cx in (0.38, 0.62):
        image[oval(0.46, cx, 0.035, 0.07)] = (245, 245, 245)            # eye
        image[oval(0.46, cx, 0.03, 0.03)] = (60, 40, 30)                # iris
        image[oval(0.38, cx, 0.015, 0.08) & (yy < 0.385)] = (70, 45, 30)  # brow
    image[oval(0.58, 0.5, 0.08, 0.02)] = (200, 150, 120)                # nose
    image[oval(0.72, 0.5, 0.035, 0.11)] = (170, 70, 70)                 # mouth
    return image.round().astype(np.uint8)


def test_trace_png_writes_a_picture(tmp_path, reference_model_path, capsys):
    chip = tmp_path / "face.npy"
    np.save(chip, synthetic_face())
    png = tmp_path / "layers.png"
    assert main(["trace", str(chip), "--model", str(reference_model_path), "--png", str(png)]) == 0
    assert f"wrote {png}" in capsys.readouterr().out
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    from PIL import Image

    with Image.open(png) as image:
        image.verify()                                  # a whole, readable PNG (its chunks' CRCs check out)
    with Image.open(png) as image:
        assert image.width > 800 and image.height > 400


def test_trace_png_without_matplotlib_is_one_line(tmp_path, reference_model_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)              # import matplotlib raises ImportError
    chip = tmp_path / "face.npy"
    np.save(chip, synthetic_face())
    png = tmp_path / "layers.png"
    assert main(["trace", str(chip), "--model", str(reference_model_path), "--png", str(png)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --png needs matplotlib: pip install 'agegender-kit[plot]' (or matplotlib)"]
    assert not png.exists()


def test_channel_grid_tiles_every_channel_scaled_on_its_own():
    maps = np.stack([np.arange(6, dtype=np.float32).reshape(2, 3) * (c + 1) for c in range(5)])   # 5 channels
    grid = channel_grid(maps, gap=1)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1)         # ceil(sqrt(5)) = 3 columns, 2 rows of 2 x 3 tiles
    for c in range(5):
        y, x = (c // 3) * 3, (c % 3) * 4
        np.testing.assert_allclose(grid[y:y + 2, x:x + 3], np.arange(6).reshape(2, 3) / 5)
    assert np.isnan(grid[2]).all() and np.isnan(grid[3:, 8:]).all()   # gaps and the missing sixth tile

