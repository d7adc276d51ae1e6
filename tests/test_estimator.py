"""agegender.Estimator: results equal the reference network's, backend choice, threads, memory."""
import os
import sys
import threading
import tracemalloc
import types

import numpy as np
import pytest

import refimpl
from agegender import Estimator, ImageError, backends
from agegender.estimator import preprocess_batch
from agegender_testdata import random_chips

# A kernel backend folds BatchNorm into the convolutions and sums in another order: float32
# rounding differs by a few ulps per layer over 20 layers. Ages are tens of years, so 1e-3 years
# absolute is ~30 ulps at that size; probabilities are in [0, 1], 1e-4 absolute.
KERNEL_AGE_ATOL, KERNEL_PROB_ATOL = 1e-3, 1e-4


@pytest.fixture(scope="module")
def reference(reference_model_path):
    return Estimator(reference_model_path, backend="refimpl")


def reference_outputs(path, chips):
    x = np.stack([refimpl.preprocess(c) for c in chips])
    return refimpl.load(path).forward(x)


def test_predict_chips_equals_the_reference_network(reference, reference_model_path):
    chips = list(random_chips(3)) + [random_chips(1, size=48, seed=1)[0][:, :, 0]]   # three RGB, one gray
    faces = reference.predict_chips(chips)
    expected = reference_outputs(reference_model_path, chips)
    assert [f.box for f in faces] == [(0, 0, 199, 199)] * 3 + [(0, 0, 47, 47)]
    # the batched resize differs from refimpl.preprocess by float32 summation order only (< 1e-6 per
    # pixel, test below); through 20 layers that stays well under 1e-4 years and 1e-5 in probability
    np.testing.assert_allclose([f.age for f in faces], expected["age"][:, 0], rtol=0, atol=1e-4)
    np.testing.assert_allclose([f.male_probability for f in faces], expected["gender"][:, 0], rtol=0, atol=1e-5)
    for face in faces:
        assert face.gender == ("male" if face.male_probability >= 0.5 else "female")
        assert set(face.heads) == set(refimpl.spec.OUTPUT_NAMES)


def test_batched_preprocessing_equals_refimpl_preprocess():
    """Same resize as refimpl.preprocess; 1e-6 allows float32 sums of up to ~200 terms in [0, 1] in another order."""
    chips = list(random_chips(5)) + list(random_chips(2, size=24, seed=1)) + [random_chips(1, size=7, seed=2)[0]]
    chips.append(np.ascontiguousarray(random_chips(1, size=300, seed=3)[0][:, :130]))
    got = preprocess_batch(chips)
    want = np.stack([refimpl.preprocess(c) for c in chips])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_chips_in_every_accepted_form_agree(reference):
    chips = random_chips(4, seed=2)
    batch = [f.age for f in reference.predict_chips(chips)]
    as_list = [f.age for f in reference.predict_chips(list(chips))]
    one_by_one = [reference.predict_chips(c)[0].age for c in chips]
    rgba = np.concatenate([chips, np.full(chips.shape[:3] + (1,), 255, np.uint8)], axis=3)
    opaque = [f.age for f in reference.predict_chips(rgba)]
    # batch of 1 vs 4: the same arithmetic per image in float32; allow accumulation-order ulps
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-5)
    assert batch == as_list == opaque


class FingerprintModel:
    """A stand-in network whose outputs for sample i are a weighted sum of sample i's pixels alone.

    The sum runs over one sample's contiguous [3, 64, 64] block in the same order whatever the
    batch, so any batching gives bit-identical outputs: a dropped, repeated or reordered chip, or a
    chip preprocessed differently in a large batch, changes the results. Records the batch sizes.
    """
    thread_safe = True

    def __init__(self):
        self.weights = np.random.default_rng(0).random(refimpl.spec.INPUT_SHAPE)
        self.batches = []

    def forward(self, x):
        refimpl.check_input(x)
        self.batches.append(len(x))
        value = (x.astype(np.float64) * self.weights).sum(axis=(1, 2, 3)) / self.weights.sum()
        return {name: (value + i).astype(np.float32)[:, None] for i, name in enumerate(refimpl.spec.OUTPUT_NAMES)}


@pytest.mark.parametrize("count, batches", [(65, [64, 1]), (130, [64, 64, 2])])
def test_more_chips_than_one_batch_equal_one_by_one(count, batches):
    """65 and 130 chips: split into batches of 64 (the default), every chip's result exactly its own."""
    model = FingerprintModel()
    estimator = Estimator.from_model(model)
    chips = random_chips(count, seed=count)
    together = estimator.predict_chips(chips)
    assert model.batches == batches
    alone = [estimator.predict_chips(chip)[0] for chip in chips]
    assert [f.heads for f in together] == [f.heads for f in alone]
    assert len({f.age for f in alone}) == count                         # the fingerprints tell the chips apart


def test_more_chips_than_one_batch_through_the_network(reference):
    """130 chips with the reference network: the chips at the batch seams (63, 64 | 65 ... 128 | 129, 130)
    against each alone."""
    chips = random_chips(130, seed=6)
    seams = [0, 62, 63, 64, 65, 126, 127, 128, 129]
    everything = reference.predict_chips(chips)
    assert len(everything) == 130
    together = [everything[i] for i in seams]
    alone = [reference.predict_chips(chips[i])[0] for i in seams]
    # batch of 64 vs 1: the same arithmetic per image in float32, summed in another order; allow ulps
    np.testing.assert_allclose([f.age for f in together], [f.age for f in alone], rtol=1e-5)
    np.testing.assert_allclose([f.male_probability for f in together], [f.male_probability for f in alone],
                               rtol=0, atol=1e-5)


def test_a_large_chip_is_resized_in_bands_as_refimpl_does():
    """A chip above BATCH_PIXELS (array or PIL image) goes band by band; same resize as refimpl.preprocess
    (1e-6: float32 sums of up to ~50 terms per output in another order), and as the one-piece product."""
    from PIL import Image

    from agegender import estimator as module

    chip = np.ascontiguousarray(random_chips(1, size=2600, seed=9)[0][:, :1700])      # 4.4 megapixels
    assert chip.shape[0] * chip.shape[1] > module.BATCH_PIXELS
    want = refimpl.preprocess(chip)
    for form in (chip, Image.fromarray(chip)):
        got = preprocess_batch([module.as_chip(form)])[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((8, 8, 3), np.float32), "dtype"),
    (np.zeros((8, 8, 2), np.uint8), "shape"),
    (np.zeros((0, 8, 3), np.uint8), "no pixels"),
    (np.zeros((2, 2, 8, 8, 3), np.uint8), "shape"),
    ("not an array", "cannot read the file"),                  # a str is a path to an image file
    (np.zeros(5, np.uint8), "shape"),
])
def test_bad_chip_arrays_raise_image_error(reference, bad, match):
    with pytest.raises(ImageError, match=match):
        reference.predict_chips(bad)


def test_predict_needs_an_image(reference):
    with pytest.raises(ImageError):
        reference.predict(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageError, match="not a JPEG"):
        reference.predict(b"definitely not an image")


def test_auto_backend_agrees_with_the_reference(reference, reference_model_path):
    auto = Estimator(reference_model_path)
    assert auto.backend in backends.available()
    chips = random_chips(6, seed=3)
    got, want = auto.estimate(list(chips)), reference.estimate(list(chips))
    for name in refimpl.spec.OUTPUT_NAMES:
        atol = KERNEL_PROB_ATOL if name.startswith("gender") else KERNEL_AGE_ATOL
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=atol, err_msg=f"{name}, {auto.backend}")


@pytest.mark.parametrize("kernels_module", [
    types.ModuleType("kernels"),                                               # empty: being written
    types.SimpleNamespace(available_backends=lambda: ["numba"],
                          load=lambda *a, **k: (_ for _ in ()).throw(RuntimeError("half-built"))),
    types.SimpleNamespace(available_backends=lambda: (_ for _ in ()).throw(OSError("no compiler"))),
])
def test_auto_falls_back_to_refimpl_when_kernels_are_incomplete(monkeypatch, kernels_module):
    monkeypatch.setitem(sys.modules, "kernels", kernels_module)
    assert Estimator(backend="auto").backend == "refimpl"


def test_unknown_backend_and_bad_weights_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="not available here"):
        Estimator(backend="tensorflow")
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    for backend in ("refimpl", "auto"):
        with pytest.raises(refimpl.ModelFileError) as info:
            Estimator(bad, backend=backend)
        assert "\n" not in str(info.value)


def test_four_threads_give_the_same_results_as_one(reference_model_path):
    """Shared Estimator (default backend, and refimpl), 4 threads each predicting other chips repeatedly."""
    chips = random_chips(16, size=64, seed=4)
    for estimator in (Estimator(reference_model_path), Estimator(reference_model_path, backend="refimpl")):
        expected = [[f.age for f in estimator.predict_chips(chips[i::4])] for i in range(4)]
        results, errors = [[] for _ in range(4)], []

        def work(i):
            try:
                for _ in range(3):
                    results[i].append([f.age for f in estimator.predict_chips(chips[i::4])])
            except Exception as exc:  # noqa: BLE001 - reported below, with the thread
                errors.append((i, exc))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for i in range(4):
            assert results[i] == [expected[i]] * 3, f"thread {i}, backend {estimator.backend}"


def test_four_threads_detecting_faces_give_the_same_results_as_one(reference_model_path):
    """predict() on photos (detector, aligner, network) from 4 threads at once on one Estimator."""
    from agegender import read_image
    from agegender_testdata import needs_detector, scene_with_chip, utkface_chips

    needs_detector()
    photos = [scene_with_chip(read_image(p), scale=1.0 + 0.2 * i, angle=4 * i, seed=i)
              for i, p in enumerate(utkface_chips(4, offset=50))]
    estimator = Estimator(reference_model_path)
    expected = [[(f.box, f.age, f.male_probability) for f in estimator.predict(p)] for p in photos]
    assert all(expected), "a face was not found in every test photo"
    results = [None] * 4

    def work(i):
        results[i] = [[(f.box, f.age, f.male_probability) for f in estimator.predict(photos[i])] for _ in range(2)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[e, e] for e in expected]


class ConstantModel:
    """A stand-in network: the estimator's own bookkeeping is what the memory test measures."""
    thread_safe = True

    def forward(self, x):
        refimpl.check_input(x)
        return {name: np.full((len(x), 1), 0.5, np.float32) for name in refimpl.spec.OUTPUT_NAMES}


def traced_growth(estimator, chips, calls, warmup=20):
    """Bytes of traced memory gained over the second half of `calls` predict_chips calls after `warmup` calls.

    The first calls fill caches and free lists (a one-off ~100 KiB); after that a leak shows as
    steady growth, and comparing two late points measures it without the one-off part.
    """
    tracemalloc.start()
    try:
        for _ in range(warmup):
            estimator.predict_chips(chips)
        half = (calls - warmup) // 2
        for _ in range(half):
            estimator.predict_chips(chips)
        middle = tracemalloc.get_traced_memory()[0]
        for _ in range(calls - warmup - half):
            estimator.predict_chips(chips)
        return tracemalloc.get_traced_memory()[0] - middle
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_over_10000_predictions():
    """10,000 chips through predict_chips (200 calls of 50): the last 4,500 add < 32 KiB (< 8 bytes each)."""
    estimator = Estimator.from_model(ConstantModel())
    chips = random_chips(50, size=24, seed=5)
    growth = traced_growth(estimator, chips, calls=200)
    assert growth < 32 * 1024, f"traced memory grew by {growth} bytes over 4,500 late predictions"


def test_the_memory_check_catches_a_small_leak():
    """A model that keeps ~60 bytes per image fails the same bound within 1,000 late predictions."""
    kept = []

    class LeakyModel(ConstantModel):
        def forward(self, x):
            kept.extend(bytes(16) + i.to_bytes(4, "little") for i in range(len(x)))
            return super().forward(x)

    growth = traced_growth(Estimator.from_model(LeakyModel()), random_chips(50, size=24, seed=5), calls=60)
    assert growth >= 32 * 1024, growth


def resident_bytes():
    """Current resident set size (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def test_memory_stays_flat_with_the_real_backend(reference_model_path):
    """1,100 predictions on the default backend: Python-visible memory (tracemalloc) and, for what compiled
    kernels allocate outside it, the resident set size. RSS moves with the allocator's page reuse, so it
    gets a looser 8 MiB bound; a leak of one 64x64 activation per image would be ~50 MiB here."""
    estimator = Estimator(reference_model_path)
    chips = random_chips(25, size=24, seed=6)
    for _ in range(4):
        estimator.predict_chips(chips)
    rss_before = resident_bytes()
    growth = traced_growth(estimator, chips, calls=40, warmup=4)
    rss_after = resident_bytes()
    assert growth < 32 * 1024, f"traced memory grew by {growth} bytes on backend {estimator.backend}"
    if rss_before is not None:
        assert rss_after - rss_before < 8 * 2 ** 20, f"RSS grew by {rss_after - rss_before} bytes"
