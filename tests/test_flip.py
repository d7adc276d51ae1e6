"""Test-time mirroring (Estimator(flip=True), `agegender predict --flip`, `training evaluate --flip`):
the mean over a face and its mirror image, never on unless asked."""
import json

import numpy as np
import pytest

import refimpl
from agegender import Estimator, cli
from agegender_testdata import random_chips
from refimpl.ensemble import flip_average


@pytest.fixture(scope="module")
def model(reference_model_path):
    return refimpl.load(reference_model_path)


def test_flip_average_is_the_mean_of_the_two_passes(model):
    x = np.stack([refimpl.preprocess(c) for c in random_chips(3, size=64, seed=4)])
    seen = []

    def forward(batch):
        seen.append(batch.copy())
        return model.forward(batch)

    got = flip_average(forward, x)
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0], x)
    np.testing.assert_array_equal(seen[1], x[:, :, :, ::-1])      # mirrored left-right: the width axis only
    plain, mirrored = model.forward(x), model.forward(np.ascontiguousarray(x[..., ::-1]))
    for name in refimpl.spec.OUTPUT_NAMES:
        want = (plain[name].astype(np.float64) + mirrored[name]) / 2
        np.testing.assert_allclose(got[name], want, rtol=2 ** -23, atol=0, err_msg=name)
        assert got[name].dtype == np.float32 and got[name].shape == (3, 1)
    # the random network is not mirror-symmetric: the two passes differ, so the mean is not either pass
    assert np.abs(plain["age"] - mirrored["age"]).max() > 1e-3


def test_a_face_and_its_mirror_image_get_the_same_answer(model):
    x = np.stack([refimpl.preprocess(c) for c in random_chips(4, size=64, seed=5)])
    a = flip_average(model.forward, x)
    b = flip_average(model.forward, np.ascontiguousarray(x[..., ::-1]))
    for name in refimpl.spec.OUTPUT_NAMES:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_estimator_flip(reference_model_path, model):
    chips = random_chips(3, size=64, seed=6)   # 64 x 64: preprocessing is per pixel, so it commutes with mirroring
    plain = Estimator(reference_model_path, backend="refimpl")
    flipped = Estimator(reference_model_path, backend="refimpl", flip=True)
    assert not plain.flip and "flip=True" in repr(flipped)
    mirrored_chips = np.ascontiguousarray(chips[:, :, ::-1])
    for got, a, b in zip(flipped.predict_chips(chips), plain.predict_chips(chips), plain.predict_chips(mirrored_chips)):
        assert got.age == pytest.approx((a.age + b.age) / 2, rel=1e-6)
        assert got.male_probability == pytest.approx((a.male_probability + b.male_probability) / 2, rel=1e-6)
        assert got.gender == ("male" if got.male_probability >= 0.5 else "female")
    with pytest.raises(ValueError, match=r"flip='yes': expected True or False"):
        Estimator.from_model(model, flip="yes")


def test_cli_flip(tmp_path, capsys, reference_model_path):
    chip = random_chips(1, size=64, seed=7)[0]
    from PIL import Image

    Image.fromarray(chip).save(tmp_path / "face.png")
    argv = ["predict", "--chips", "--json", "--backend", "refimpl", "--weights", reference_model_path,
            str(tmp_path / "face.png")]
    assert cli.main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli.main(argv[:1] + ["--flip"] + argv[1:]) == 0
    flipped = json.loads(capsys.readouterr().out)
    want = Estimator(reference_model_path, backend="refimpl", flip=True).predict_chips(chip)[0]
    assert flipped[0]["age"] == round(want.age, 2) and flipped[0]["male_probability"] == round(want.male_probability, 4)
    assert flipped[0]["age"] != plain[0]["age"]


def test_parquet_flip_is_one_of_the_options_of_an_out_folder(tmp_path, capsys, reference_model_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="the scale extra (pyarrow) is not installed")
    from PIL import Image

    folder = tmp_path / "chips"
    folder.mkdir()
    chips = random_chips(2, size=64, seed=8)
    for i, chip in enumerate(chips):
        Image.fromarray(chip).save(folder / f"{i}.png")
    out = str(tmp_path / "out")
    argv = ["predict", "--chips", "--backend", "refimpl", "--weights", reference_model_path, "--parquet", out]
    assert cli.main(argv[:1] + ["--flip"] + argv[1:] + [str(folder)]) == 0
    rows = sorted(pq.read_table(out).to_pylist(), key=lambda row: row["file"])
    want = Estimator(reference_model_path, backend="refimpl", flip=True).predict_chips(chips)
    assert [row["age"] for row in rows] == pytest.approx([f.age for f in want], rel=1e-6)
    capsys.readouterr()
    assert cli.main(argv + [str(folder)]) == 2       # the same folder without --flip: refused, not mixed
    assert "holds results made with other options (flip True there, False here)" in capsys.readouterr().err
