"""The PyTorch side: module vs spec, module vs its exported ONNX file, the paper's loss, data sets, a smoke run."""
import csv
import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the training tests need the train extra (pip install -e .[train])")

import refimpl  # noqa: E402
from conftest import assert_close, ort_session, utkface_dir  # noqa: E402
from refimpl import spec  # noqa: E402
from refimpl.golden import tolerance  # noqa: E402
from training import checkpoints, data, splits  # noqa: E402
from training.export import export  # noqa: E402
from training.loss import (HEAD_WEIGHTS, gender_acc_by_age_group, mae_by_age_group, metrics,  # noqa: E402
                           paper_loss)
from training.model import AgeGenderNet, load_onnx_weights, onnx_weights  # noqa: E402


def randomized_module(seed=0):
    """A module in eval mode with random, non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = AgeGenderNet()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.3)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
        for name, param in model.named_parameters():
            if ".bn" in name:
                param.uniform_(0.5, 1.5) if name.endswith("weight") else param.normal_(0, 0.2)
    return model.eval()


def test_module_has_the_spec_parameters():
    model = AgeGenderNet()
    assert sum(p.numel() for p in model.parameters()) == 99_202
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert shapes == spec.parameter_shapes()


def test_exported_file_agrees_with_module(tmp_path):
    model = randomized_module(1)
    path = tmp_path / "exported.onnx"
    export(model, path, {"training": {"note": "test"}})
    x = np.random.default_rng(2).random((5, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}
    by_ort = dict(zip(spec.OUTPUT_NAMES, ort_session(path).run(None, {"image": x})))
    by_refimpl = refimpl.load(path).forward(x)
    for name in spec.OUTPUT_NAMES:
        assert_close(f"onnxruntime {name}", expected[name], by_ort[name], tolerance(name))
        assert_close(f"refimpl {name}", expected[name], by_refimpl[name], tolerance(name))
    assert json.loads(refimpl.load(path).metadata["training"]) == {"note": "test"}


def test_heads_are_the_spec_fully_connected_layers_in_the_files_order():
    """Each spec.FCS entry is a Linear of its size under its initializer name, made in the file's weight order (so a
    seeded module draws the same initial weights as before), and the shipped file's weights, named as a state_dict
    of the existing format, load strictly and run as refimpl runs them."""
    from torch import nn

    model = AgeGenderNet()
    for key, fc in spec.FC_BY_NAME.items():
        layer = model.get_submodule(key)
        assert isinstance(layer, nn.Linear) and (layer.in_features, layer.out_features) == (fc.nin, fc.nout), key
    trainable = [k for k in spec.parameter_shapes() if not spec.is_running_statistic(k)]
    assert [k for k, _ in model.named_parameters()] == trainable
    shipped = refimpl.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights",
                                        "agegender.onnx"))
    state = {k: torch.from_numpy(v.copy()) for k, v in shipped.weights.items()}
    state.update({k: torch.tensor(0) for k in model.state_dict() if k.endswith("num_batches_tracked")})
    model.load_state_dict(state, strict=True)
    x = np.random.default_rng(7).random((3, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        ours = {k: v.numpy() for k, v in model.eval()(torch.from_numpy(x)).items()}
    reference = shipped.forward(x)
    for name in spec.OUTPUT_NAMES:
        assert_close(f"module {name}", reference[name], ours[name], tolerance(name))


def test_onnx_weights_round_trip():
    model = randomized_module(3)
    copy = load_onnx_weights(AgeGenderNet(), onnx_weights(model))
    for (k, a), (_, b) in zip(model.state_dict().items(), copy.state_dict().items()):
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(a, b), k


def test_paper_loss_is_formula_3():
    model = randomized_module(4).train()
    x = torch.rand(6, 3, 64, 64)
    age, male = torch.tensor([20.0, 35, 50, 8, 70, 41]), torch.tensor([1.0, 0, 1, 0, 0, 1])
    out = model(x, logits=True)
    total, _ = paper_loss(out, age, male)

    def bce(p):
        p = p[:, 0].double()
        return -(male * torch.log(p) + (1 - male) * torch.log(1 - p)).mean()

    def mae(a):
        return (a[:, 0].double() - age).abs().mean()

    expected = ((bce(out["gender_final"]) + mae(out["age_final"]))
                + 0.3 * (bce(out["gender_virtual"]) + mae(out["age_virtual"]))
                + 0.5 * (bce(out["gender_low"]) + mae(out["age_low"])))
    assert HEAD_WEIGHTS == {"final": 1.0, "virtual": 0.3, "low": 0.5}
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    gender_only = bce(out["gender_final"]) + 0.3 * bce(out["gender_virtual"]) + 0.5 * bce(out["gender_low"])
    from experiments.gender_ceiling import gender_terms_only

    assert float(gender_terms_only(out, age, male)[0].detach()) == pytest.approx(float(gender_only.detach()), rel=1e-5)


def test_metrics_on_a_hand_made_case():
    m = metrics(age_pred=[10, 20, 30, 40], male_prob=[0.9, 0.2, 0.6, 0.4], age=[12, 26, 30, 44], male=[1, 0, 0, 0])
    assert m["mae"] == pytest.approx((2 + 6 + 0 + 4) / 4)
    assert (m["ca3"], m["ca5"], m["gender_acc"]) == (0.5, 0.75, 0.75)
    by_group = gender_acc_by_age_group(male_prob=[0.9, 0.2, 0.6, 0.4, 0.7], male=[1, 0, 0, 0, 1], age=[3, 5, 8, 44, 75])
    assert by_group["0-9"] == [pytest.approx(2 / 3), 3] and by_group["40-49"] == [1.0, 1]
    assert by_group["70+"] == [1.0, 1] and by_group["20-29"] == [None, 0]
    assert mae_by_age_group([10, 20], [12, 26])["20-29"] == [6.0, 1]   # |20 - 26|


def test_unlabelled_gender_is_left_out_of_the_loss_and_the_accuracy():
    """FG-NET and MegaAge-Asian have no gender (male = -1): formula (3)'s BCE averages over the labelled images
    only, and the accuracy counts only them (None when there are none)."""
    model = randomized_module(5).train()
    torch.manual_seed(0)
    out = model(torch.rand(4, 3, 64, 64), logits=True)
    age = torch.tensor([20.0, 35, 50, 8])
    labelled = torch.tensor([True, False, True, False])
    partial, _ = paper_loss(out, age, torch.tensor([1.0, -1, 0, -1]))
    expected = sum(weight * (torch.nn.functional.binary_cross_entropy(out[f"gender_{h}"][labelled, 0],
                                                                      torch.tensor([1.0, 0]))
                             + (out[f"age_{h}"][:, 0] - age).abs().mean())
                   for h, weight in HEAD_WEIGHTS.items())
    assert float(partial.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    none, _ = paper_loss(out, age, torch.full((4,), -1.0))
    ages_only = sum(weight * (out[f"age_{h}"][:, 0] - age).abs().mean() for h, weight in HEAD_WEIGHTS.items())
    assert float(none.detach()) == pytest.approx(float(ages_only.detach()), rel=1e-5)

    m = metrics(age_pred=[10, 20, 30], male_prob=[0.9, 0.2, 0.3], age=[10, 20, 30], male=[1, -1, 1])
    assert (m["gender_acc"], m["n_gender"], m["n"]) == (0.5, 2, 3)
    assert metrics([10], [0.9], [12], [-1])["gender_acc"] is None
    assert gender_acc_by_age_group([0.9, 0.2, 0.3], [1, -1, 1], [5, 6, 44])["0-9"] == [1.0, 1]


def test_select_runs_each_protocol_and_names_what_is_wrong():
    people = data.Samples()
    for i, subject in enumerate(["007", "003", "007", "010", "003"]):
        people.add(f"{i}.jpg", 20 + i, -1, subject)
    train, val = splits.select("lopo", people, fold=1)                  # subjects sorted: 003, 007, 010
    assert val.tolist() == [0, 2] and train.tolist() == [1, 3, 4]
    train, val = splits.select("kfold", people, folds=5, fold=4, seed=1)
    assert len(val) == 1 and len(train) == 4
    assert splits.select("all", people)[1].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="between 0 and 2 for lopo"):
        splits.select("lopo", people, fold=3)
    with pytest.raises(ValueError, match="--folds must be between 2 and the number of images"):
        splits.select("kfold", people, folds=6)
    people.subjects[2] = None
    with pytest.raises(ValueError, match="needs subject ids"):
        splits.select("lopo", people)
    with pytest.raises(ValueError, match="no usable images"):
        splits.select("holdout", data.Samples())
    with pytest.raises(ValueError, match="leaves 5 to train on and 0 to validate"):
        splits.select("holdout", people, val_fraction=0.05)


def test_leave_one_person_out_on_fgnet_then_pooled(tmp_path, capsys):
    """Train two leave-one-person-out folds on a generated FG-NET folder (no gender labels), then pool them:
    each fold validates on its person's images only, and crossval weights the folds by image count."""
    folder = tmp_path / "fgnet"
    folder.mkdir()
    names = ["001A05.JPG", "001A12.JPG", "001A30.JPG", "002A40.JPG", "003A08.JPG", "003A61.JPG"]
    for i, name in enumerate(names):
        write_chip(folder / name, value=30 + 30 * i)
    from training.__main__ import main

    source = ["--dataset", "fgnet", "--data", str(folder), "--cache", str(tmp_path / "cache"), "--threads", "1"]
    common = [*source, "--protocol", "lopo", "--batch-size", "2", "--epochs", "1", "--no-progress"]
    for fold in (0, 1):
        main(["train", *common, "--fold", str(fold), "--out", str(tmp_path / f"fold{fold}")])
    logs = [json.loads(open(tmp_path / f"fold{f}" / "log.jsonl").read()) for f in (0, 1)]
    assert [r["val"]["ensemble"]["n"] for r in logs] == [3, 1]         # person 001 has 3 images, 002 has 1
    assert all(r["val"]["ensemble"]["gender_acc"] is None and np.isfinite(r["loss"]) for r in logs)
    capsys.readouterr()
    main(["crossval", str(tmp_path / "fold0"), str(tmp_path / "fold1"), "--json", str(tmp_path / "pooled.json")])
    assert "fgnet, lopo: 2 folds pooled (4 validation images)" in capsys.readouterr().out
    pooled = json.load(open(tmp_path / "pooled.json"))["metrics"]["ensemble"]
    maes = [r["val"]["ensemble"]["mae"] for r in logs]
    assert pooled["mae"] == pytest.approx((3 * maes[0] + maes[1]) / 4) and pooled["gender_acc"] is None
    main(["evaluate", *source, "--protocol", "all", str(tmp_path / "fold0" / "last.pt"),
          "--json", str(tmp_path / "all.json")])                       # a cross-data-set evaluation
    everything = json.load(open(tmp_path / "all.json"))
    assert everything["split"] == {"dataset": "fgnet", "protocol": "all", "seed": 0, "n_val": 6}
    with pytest.raises(SystemExit, match="a fold appears twice"):
        main(["crossval", str(tmp_path / "fold0"), str(tmp_path / "fold0")])
    with pytest.raises(SystemExit, match="between 0 and 2 for lopo"):
        main(["train", *common, "--fold", "3", "--out", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="trained on another split"):     # fold 0's run resumed as fold 2
        main(["train", *common, "--fold", "2", "--out", str(tmp_path / "fold0"), "--resume"])
    with pytest.raises(SystemExit, match="leaves none to train on"):
        main(["train", *source, "--protocol", "all", "--out", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="--dataset fgnet needs --data"):
        main(["evaluate", "--dataset", "fgnet", "model.onnx"])


def test_splits_partition_the_data():
    train, val = splits.holdout(100, 0.2, seed=5)
    assert len(val) == 20 and not set(train) & set(val) and len(train) + len(val) == 100
    assert np.array_equal(splits.holdout(100, 0.2, seed=5)[1], val)
    folds = splits.kfold(23, k=5)
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(23))
    lopo = splits.leave_one_person_out(["a", "b", "a", "c"])
    assert [v.tolist() for _, v in lopo] == [[0, 2], [1], [3]]


# ---- data set loaders on generated fixtures --------------------------------------------------------

def write_chip(path, value=128, size=40):
    from PIL import Image

    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def eight_chips(tmp_path):
    """A UTKFace-style folder of eight flat-coloured chips, men and women from 8 to 71."""
    pytest.importorskip("PIL")
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, (age, gender) in enumerate([(20, 0), (30, 1), (45, 0), (60, 1), (8, 0), (33, 1), (71, 0), (25, 1)]):
        write_chip(folder / f"{age}_{gender}_0_2017010{i}.jpg.chip.jpg", value=20 + 25 * i)
    return folder


def test_utkface_loader_skips_and_counts_malformed(tmp_path):
    for name in ["25_0_2_20170116174525125.jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg",
                 "7_1_0_20170109.jpg", "abc_1_0_2017.jpg.chip.jpg", "30_5_0_20170101.jpg.chip.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 3 malformed"):
        s = data.utkface(str(tmp_path))
    assert sorted(zip(s.ages, s.males)) == [(7.0, 0.0), (25.0, 1.0), (39.0, 0.0)]    # 0 = male -> male label 1


def test_fgnet_loader(tmp_path):
    for name in ["001A02.JPG", "001A10b.JPG", "082A43.jpg", "readme.txt"]:
        (tmp_path / name).write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 1"):
        s = data.fgnet(str(tmp_path))
    assert s.ages == [2.0, 10.0, 43.0] and s.subjects == ["001", "001", "082"]


def test_megaage_asian_loader(tmp_path):
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "train_name.txt").write_text("1.jpg\n2.jpg\n3.jpg\n")
    (tmp_path / "list" / "train_age.txt").write_text("23\nold\n57\n")
    with pytest.warns(UserWarning, match="skipped 1"):
        s = data.megaage_asian(str(tmp_path))
    assert s.ages == [23.0, 57.0] and s.paths[1].endswith(os.path.join("train", "3.jpg"))


def test_morph2_and_generic_csv_loaders(tmp_path):
    with open(tmp_path / "morph.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id_num", "photo", "age", "gender"])
        w.writerows([["100", "a/1.jpg", "25", "M"], ["101", "a/2.jpg", "x", "F"], ["102", "a/3.jpg", "44", "F"]])
    with pytest.warns(UserWarning, match="skipped 1"):
        s = data.morph2(str(tmp_path / "morph.csv"))
    assert list(zip(s.ages, s.males, s.subjects)) == [(25.0, 1.0, "100"), (44.0, 0.0, "102")]
    (tmp_path / "faces.csv").write_text("path,age,gender\nf/1.png,31,female\nf/2.png,12,male\nf/3.png,9,?\n"
                                        "f/4.png,250,male\n")
    with pytest.warns(UserWarning, match="skipped 2"):          # no gender; an age of 250
        s = data.generic_csv(str(tmp_path / "faces.csv"))
    assert list(zip(s.ages, s.males)) == [(31.0, 0.0), (12.0, 1.0)]


def test_training_preprocessing_is_refimpl_preprocess(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    from PIL import Image

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (50 + i * 30, 60, 3), dtype=np.uint8)).save(paths[-1])
    arrays = data.preprocess_all(paths, workers=1)
    for path, array in zip(paths, arrays):
        np.testing.assert_array_equal(array, refimpl.preprocess(np.asarray(Image.open(path).convert("RGB"))))


def test_cache_is_not_reused_when_an_image_changes(tmp_path):
    """The cache was keyed by the paths alone: an image replaced under the same name kept its old chip."""
    pytest.importorskip("PIL")
    from PIL import Image

    rng = np.random.default_rng(1)
    paths = [str(tmp_path / f"{i}.png") for i in range(2)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    cache = tmp_path / "cache"
    first = np.array(data.preprocess_all(paths, str(cache), workers=1))
    np.testing.assert_array_equal(data.preprocess_all(paths, str(cache), workers=1), first)   # reused as is
    assert len(os.listdir(cache)) == 1
    before = os.stat(paths[1]).st_mtime_ns
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(paths[1])                       # an edit ...
    os.utime(paths[1], ns=(before + 10**9, before + 10**9))     # ... a second later, whatever the fs's clock grain
    second = np.array(data.preprocess_all(paths, str(cache), workers=1))
    np.testing.assert_array_equal(second[0], first[0])
    np.testing.assert_allclose(second[1], 200 / 255, atol=1e-6)                                # the new image
    assert len(os.listdir(cache)) == 2


def test_smoke_training_and_export_round_trip(tmp_path):
    """A few steps on a handful of generated chips, then export, then refimpl and ORT agree with the module."""
    folder = eight_chips(tmp_path)
    from training.__main__ import main

    out = tmp_path / "run"
    main(["train", "--data", str(folder), "--cache", str(tmp_path / "cache"), "--epochs", "3", "--batch-size", "4",
          "--val-fraction", "0.25", "--out", str(out), "--no-progress", "--threads", "1", "--stop-after", "2"])
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["epoch"] for r in log] == [1, 2] and np.isfinite(log[-1]["loss"])
    main(["train", "--data", str(folder), "--cache", str(tmp_path / "cache"), "--epochs", "3", "--batch-size", "4",
          "--val-fraction", "0.25", "--out", str(out), "--no-progress", "--threads", "1", "--resume"])
    assert [json.loads(line)["epoch"] for line in open(out / "log.jsonl")] == [1, 2, 3]
    main(["export", str(out / "last.pt"), str(tmp_path / "smoke.onnx")])
    model = refimpl.load(tmp_path / "smoke.onnx")
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    from training.evaluate import module_from_checkpoint

    with torch.no_grad():
        expected = module_from_checkpoint(str(out / "last.pt"))(torch.from_numpy(x))
    for name in spec.OUTPUT_NAMES:
        assert_close(name, expected[name].numpy(), model.forward(x)[name], tolerance(name))

    # evaluate runs the exported file with refimpl or with ONNX Runtime: the same metrics either way
    results = {}
    for runtime in ("refimpl", "onnxruntime"):
        main(["evaluate", "--data", str(folder), "--cache", str(tmp_path / "cache"), "--val-fraction", "0.25",
              "--threads", "1", str(tmp_path / "smoke.onnx"), "--runtime", runtime,
              "--json", str(tmp_path / f"{runtime}.json")])
        results[runtime] = json.load(open(tmp_path / f"{runtime}.json"))
        assert results[runtime]["runtime"] == runtime and results[runtime]["split"]["n_val"] == 2
    for head, values in results["refimpl"]["metrics"].items():
        other = results["onnxruntime"]["metrics"][head]
        assert values["gender_acc"] == other["gender_acc"], head
        assert abs(values["mae"] - other["mae"]) < 1e-3, (head, values["mae"], other["mae"])
    # --flip (the mean over each chip and its mirror image): the same metrics from all three runtimes
    flipped = {}
    for runtime, model_file in (("refimpl", "smoke.onnx"), ("onnxruntime", "smoke.onnx"), ("torch", "last.pt")):
        model_path = tmp_path / model_file if model_file.endswith(".onnx") else out / model_file
        main(["evaluate", "--data", str(folder), "--cache", str(tmp_path / "cache"), "--val-fraction", "0.25",
              "--threads", "1", str(model_path), "--runtime", "onnxruntime" if runtime == "onnxruntime" else "refimpl",
              "--flip", "--json", str(tmp_path / "flip.json")])
        flipped[runtime] = json.load(open(tmp_path / "flip.json"))
        assert flipped[runtime]["flip"] is True and flipped[runtime]["runtime"] == runtime
    assert results["refimpl"]["flip"] is False
    for head, values in flipped["refimpl"]["metrics"].items():
        for runtime in ("onnxruntime", "torch"):
            other = flipped[runtime]["metrics"][head]
            assert abs(values["mae"] - other["mae"]) < 1e-3, (runtime, head, values["mae"], other["mae"])


def test_second_stage_with_weight_average_resumes_exactly_and_the_card_lists_both_stages(tmp_path):
    """--init starts from another run, --ema exports an average of the weights; a stopped and resumed second
    stage ends with the same weights as an uninterrupted one, and the model card reproduces both stages."""
    folder = eight_chips(tmp_path)
    from training.__main__ import main
    from training.card import make_card, write_markdown

    data_args = ["--data", str(folder), "--cache", str(tmp_path / "cache"), "--val-fraction", "0.25", "--threads", "1"]
    common = [*data_args, "--batch-size", "4", "--no-progress"]
    main(["train", *common, "--epochs", "2", "--out", str(tmp_path / "one")])
    second = [*common, "--epochs", "3", "--init", str(tmp_path / "one" / "last.pt"), "--ema", "0.9"]
    main(["train", *second, "--out", str(tmp_path / "straight")])
    main(["train", *second, "--out", str(tmp_path / "resumed"), "--stop-after", "1"])
    main(["train", *second, "--out", str(tmp_path / "resumed"), "--resume"])
    straight = checkpoints.load(tmp_path / "straight" / "last.pt")
    resumed = checkpoints.load(tmp_path / "resumed" / "last.pt")
    for key in ("model", "training_model"):
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs after stop and resume"
    assert straight["n_averaged"] == 3
    differs = [n for n, t in straight["model"].items()
               if t.is_floating_point() and not torch.equal(t, straight["training_model"][n])]
    assert differs, "the exported weights are the raw training weights, not their average"

    main(["evaluate", *data_args, str(tmp_path / "straight" / "last.pt"), "--json", str(tmp_path / "eval.json")])
    ours = json.load(open(tmp_path / "eval.json"))
    json.dump({**ours, "model": "stand-in baseline"}, open(tmp_path / "baseline.json", "w"))
    card, log = make_card(str(tmp_path / "straight"), tmp_path / "eval.json", tmp_path / "baseline.json")
    assert [r["stage"] for r in log] == [1, 1, 2, 2, 2] and card["training"]["epochs"] == 5
    first, then = [c for c in card["reproduce"] if c.startswith("python -m training train")]
    assert all("--threads " in c for c in (first, then))
    assert "--init" not in first and "--epochs 2" in first and f"--out {tmp_path / 'one'}" in first
    assert f"--init {tmp_path / 'one' / 'last.pt'}" in then and "--ema 0.9" in then and "--epochs 3" in then
    write_markdown(card, tmp_path / "card.md")
    assert "5 epochs in 2 stages" in open(tmp_path / "card.md").read()


def test_gender_ceiling_trains_the_gender_terms_alone_and_says_so(tmp_path):
    """The diagnostic moves the gender weights, leaves the age-only heads at their initial values (no age
    term reaches them), and its checkpoint and card name its loss and its own command."""
    folder = eight_chips(tmp_path)
    from experiments.gender_ceiling import LOSS, main
    from training.card import describe_stage, stage_settings, train_command

    out = tmp_path / "ceiling"
    main(["--data", str(folder), "--cache", str(tmp_path / "cache"), "--val-fraction", "0.25", "--threads", "1",
          "--batch-size", "3", "--epochs", "2", "--no-progress", "--out", str(out)])
    state = checkpoints.load(out / "last.pt")
    torch.manual_seed(0)                                 # the run's seed: the same initial weights
    initial = AgeGenderNet().state_dict()
    for name in ("age_virtual.fc.weight", "top_head.fc_age.weight", "top_head.fc_age.bias"):
        assert torch.equal(state["model"][name], initial[name]), f"{name} moved without an age term"
    for name in ("gender_virtual.fc.weight", "top_head.fc_gender.weight", "stem_fine.conv1.weight"):
        assert not torch.equal(state["model"][name], initial[name]), f"{name} did not train"
    assert state["args"]["loss"] == LOSS
    assert train_command(state["args"], str(out)).startswith("python -m experiments.gender_ceiling ")
    assert LOSS in describe_stage(**stage_settings(state["args"]))


def test_gradient_norms_separate_what_each_task_reaches():
    """A head that only one task uses gets no gradient from the other; a shared block gets both."""
    from experiments.gender_ceiling import gradient_norms

    norms = gradient_norms(randomized_module(5), torch.rand(6, 3, 64, 64),
                           torch.tensor([20.0, 35, 50, 8, 70, 41]), torch.tensor([1.0, 0, 1, 0, 0, 1]))
    assert norms["gender_virtual"][0] == 0 and norms["gender_virtual"][1] > 0
    assert norms["age_virtual"][1] == 0 and norms["age_virtual"][0] > 0
    assert all(a > 0 and g > 0 for a, g in (norms["stem_fine"], norms["top"], norms["low_head"]))


def test_utkface_folder_when_present():
    folder = utkface_dir()
    if not os.path.isdir(folder):
        pytest.skip(f"UTKFace not found at {folder} (set AGEGENDER_UTKFACE); a user's machine has no data set")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = data.utkface(folder)
    assert len(s) > 18_000 and min(s.ages) >= 1 and max(s.ages) <= 116 and set(s.males) == {0.0, 1.0}
