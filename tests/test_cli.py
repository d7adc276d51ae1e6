"""`agegender predict`: outputs, folders, stdin, bad files listed at the end, exit codes, annotation."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from agegender import cli, detect
from agegender_testdata import ROOT, encode, needs_detector, random_chips, scene_with_chip, utkface_chips

pytest.importorskip("PIL", reason="reading image files needs pillow (the `image` extra)")

JSON_KEYS = {"file", "face", "box", "age", "gender", "male_probability", "score"}


def run(capsys, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def chips_dir(tmp_path):
    """A folder tree: three chips in three formats (one in a subfolder), a text file and a broken JPEG."""
    chips = random_chips(3, size=64, seed=11)
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(encode(chips[0], "PNG"))
    (tmp_path / "b.jpg").write_bytes(encode(chips[1], "JPEG"))
    (tmp_path / "sub" / "c.webp").write_bytes(encode(chips[2], "WEBP", lossless=True))
    (tmp_path / "notes.txt").write_text("not picked up: no image extension")
    (tmp_path / "broken.jpg").write_bytes(encode(chips[1], "JPEG")[:150])
    (tmp_path / "empty.png").write_bytes(b"")
    return tmp_path


def test_chips_json(capsys, chips_dir):
    code, out, err = run(capsys, "predict", "--chips", "--json", str(chips_dir / "a.png"), str(chips_dir / "b.jpg"))
    assert code == 0, err
    rows = json.loads(out)
    assert [r["file"] for r in rows] == [str(chips_dir / "a.png"), str(chips_dir / "b.jpg")]
    for row in rows:
        assert JSON_KEYS <= set(row) and row["box"] == [0, 0, 63, 63] and row["face"] == 0
        assert row["gender"] == ("male" if row["male_probability"] >= 0.5 else "female")


def test_folder_run_lists_failures_at_the_end_and_exits_1(capsys, chips_dir):
    code, out, err = run(capsys, "predict", "--chips", "--csv", "--heads", str(chips_dir))
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(out)))
    found = sorted(os.path.relpath(r["file"], chips_dir) for r in rows)
    assert found == ["a.png", "b.jpg", os.path.join("sub", "c.webp")]
    assert {"age_final", "gender_low", "left", "bottom"} <= set(rows[0])
    lines = err.strip().splitlines()
    assert lines[0] == "agegender: 2 of 5 files failed:"
    assert lines[1].startswith(f"  {chips_dir / 'broken.jpg'}: corrupt or truncated image")
    assert lines[2] == f"  {chips_dir / 'empty.png'}: the file is empty (0 bytes)"


def test_table_and_paths_from_stdin(capsys, monkeypatch, chips_dir):
    paths = f"{chips_dir / 'a.png'}\n\n{chips_dir / 'nothing.jpg'}\n"
    code, out, err = run(capsys, "predict", "--chips", stdin=paths, monkeypatch=monkeypatch)
    assert code == 1
    header, row = out.splitlines()
    assert header.split() == ["file", "face", "box", "age", "gender", "P(male)", "score"]
    assert row.startswith(str(chips_dir / "a.png")) and "(0, 0, 63, 63)" in row
    assert "nothing.jpg: no such file or folder" in err


def test_usage_and_setup_errors_exit_2(capsys, chips_dir, tmp_path):
    bad_weights = tmp_path / "w.onnx"
    bad_weights.write_bytes(b"junk")
    for argv, message in [
        (["predict", "--chips", "--backend", "nope", str(chips_dir)], "backend 'nope' is not available"),
        (["predict", "--chips", "--weights", str(bad_weights), str(chips_dir)], "w.onnx: "),
        (["predict", "--chips", str(tmp_path / "emptydir_missing")], None),
    ]:
        code, out, err = run(capsys, *argv)
        if message is None:
            assert code == 1 and "no such file or folder" in err
            continue
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_without_the_detector_extra_says_how_to_get_it(capsys, monkeypatch, chips_dir):
    def missing():
        raise detect.DetectorUnavailableError(f"face detection needs dlib: {detect.INSTALL_HINT}")
    monkeypatch.setattr(detect, "_import_dlib", missing)
    code, out, err = run(capsys, "predict", str(chips_dir / "a.png"))
    assert code == 2
    assert "pip install 'agegender-kit[detect]'" in err and "--chips" in err


def test_annotate_writes_copies(capsys, chips_dir, tmp_path):
    out_dir = tmp_path / "annotated"
    code, out, err = run(capsys, "predict", "--chips", "--annotate", str(out_dir), str(chips_dir / "sub"))
    assert code == 0, err
    from PIL import Image
    written = Image.open(out_dir / "c.webp.annotated.png")
    assert written.size == (64, 64)
    assert err == f"agegender: --annotate: wrote 1 file to {out_dir}\n"


def test_photo_with_faces_and_photo_without(capsys, tmp_path):
    needs_detector()
    chip_path = utkface_chips(1)[0]
    from agegender import read_image
    scene = scene_with_chip(read_image(chip_path), scale=1.2, angle=5, seed=3)
    (tmp_path / "scene.png").write_bytes(encode(scene, "PNG"))
    noise = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    (tmp_path / "noise.png").write_bytes(encode(noise, "PNG"))
    code, out, err = run(capsys, "predict", "--json", str(tmp_path / "noise.png"), str(tmp_path / "scene.png"))
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["file"].endswith("scene.png") and rows[0]["score"] > 0
    left, top, right, bottom = rows[0]["box"]
    assert 0 <= left < right < 640 and 0 <= top < bottom < 480
    assert "noise.png: no face found" in err
    code, out, err = run(capsys, "predict", str(tmp_path / "noise.png"))
    assert code == 0 and "no face found" in out


def test_python_dash_m_and_console_script(chips_dir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "agegender", "predict", "--chips", "--json",
                             str(chips_dir / "a.png")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["box"] == [0, 0, 63, 63]
    script = shutil.which("agegender")
    if script is None:
        pytest.skip("the `agegender` console script is not installed (pip install -e .)")
    result = subprocess.run([script, "backends"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "refimpl" in result.stdout.split()


def test_save_chips_then_predict_them_as_chips(capsys, tmp_path):
    """The chips a photo run aligns, saved by the CLI and read back, are the very pixels the network saw, so
    they give the very same outputs, unrounded: compared through the API, the read-back chips run as one
    batch, as the photo's faces did (the same pixels in the same batch: bit-identical on every backend)."""
    needs_detector()
    from agegender import Estimator, read_image
    scene = scene_with_chip(read_image(utkface_chips(1, offset=30)[0]), scale=0.9, angle=-8, seed=4)
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(scene, "PNG"))
    code, out, err = run(capsys, "predict", "--json", "--heads", "--save-chips", str(tmp_path / "chips"), str(photo))
    assert code == 0, err
    rows = json.loads(out)
    estimator = Estimator()                                            # auto: the backend the CLI chose
    faces = estimator.predict(photo)
    assert len(faces) == len(rows) >= 1
    names = [f"photo.png.face{i}.png" for i in range(len(faces))]
    assert sorted(os.listdir(tmp_path / "chips")) == sorted(names)
    saved = [read_image(tmp_path / "chips" / name) for name in names]
    for face, chip, row in zip(faces, saved, rows):
        assert np.array_equal(chip, face.chip)
        assert row["age"] == round(face.age, 2) and row["age_low"] == round(face.heads["age_low"], 4)
    again = estimator.predict_chips(saved)
    assert [f.heads for f in again] == [f.heads for f in faces]


@pytest.mark.parametrize("count", [65, 130])
def test_more_faces_than_a_batch(capsys, monkeypatch, tmp_path, count):
    """65 and 130 chips: the run flushes its batch of 64 mid-run (64 + 1; 64 + 64 + 2). Every file is
    reported once, with the values a one-by-one run gives. The kernels compute each image on its own,
    so the batch cannot change a bit; numpy's BLAS (refimpl) picks its blocking by matrix shape, so a
    batch of 1 and of 64 sum in other orders: 7.6e-6 measured over 130 chips, bound 1e-4."""
    from agegender import Estimator, backends, output, read_image
    backend = backends.available()[0]
    tolerance = 0.0 if backend != backends.REFERENCE else 1e-4
    chips = random_chips(count, size=64, seed=count)
    for i, chip in enumerate(chips):
        (tmp_path / f"c{i:03d}.png").write_bytes(encode(chip, "PNG"))
    seen, face_row = [], output.face_row

    def recording(file, index, face, heads=False):
        seen.append((file, face.heads))
        return face_row(file, index, face, heads)
    monkeypatch.setattr(output, "face_row", recording)
    code, out, err = run(capsys, "predict", "--chips", "--json", "--backend", backend, str(tmp_path))
    assert code == 0, err
    files = [str(tmp_path / f"c{i:03d}.png") for i in range(count)]
    assert [row["file"] for row in json.loads(out)] == files
    assert [file for file, _ in seen] == files
    one_by_one = Estimator(backend=backend, batch_size=1, threads=1)       # 1 thread: quick on a busy machine
    for (file, heads), chip in zip(seen, chips):
        assert np.array_equal(read_image(file), chip)
        expected = one_by_one.predict_chips(chip)[0].heads
        worst = max(abs(heads[name] - expected[name]) for name in expected)
        assert worst <= tolerance, f"{file}: off by {worst} from a one-by-one run"


def test_progress_bar():
    stream = io.StringIO()
    assert list(cli.progress(["a", "b", "c"], show=True, stream=stream)) == ["a", "b", "c"]
    assert stream.getvalue().endswith("files [==============================] 3/3\n")
    quiet = io.StringIO()
    assert list(cli.progress(["a", "b"], stream=quiet)) == ["a", "b"] and quiet.getvalue() == ""   # not a terminal


def test_progress_and_no_progress_on_a_terminal(capsys, monkeypatch, chips_dir):
    """stderr a terminal, JSON on stdout, two files: the bar is drawn by default and with --progress, and
    --no-progress leaves stderr empty (the results are the same)."""
    files = [str(chips_dir / "a.png"), str(chips_dir / "b.jpg")]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    runs = {flag: run(capsys, "predict", "--chips", "--json", *flag, *files)
            for flag in ((), ("--progress",), ("--no-progress",))}
    for flag, (code, out, err) in runs.items():
        assert code == 0, (flag, err)
        assert [row["file"] for row in json.loads(out)] == files
    bar = f"\rfiles [{'=' * 30}] 2/2\n"
    assert runs[()][2].endswith(bar) and runs[("--progress",)][2].endswith(bar)
    assert runs[("--no-progress",)][2] == ""

def test_setup_errors_name_what_is_wrong(capsys, monkeypatch, chips_dir, tmp_path):
    """Each is one line on stderr and exit status 2, naming the thing and what was expected."""
    (tmp_path / "nothing_here" / "sub").mkdir(parents=True)
    (tmp_path / "nothing_here" / "notes.txt").write_text("no image")
    for argv, message in [
        (["predict", "--chips", "--weights", str(tmp_path), str(chips_dir / "a.png")],
         f"--weights {tmp_path}: is a folder; expected an ONNX file (FILE.onnx)"),
        (["predict", "--chips", str(tmp_path / "nothing_here")],
         f"no image files in {tmp_path / 'nothing_here'} (searched recursively for .jpg .jpeg"),
    ]:
        code, out, err = run(capsys, *argv)
        assert code == 2 and err.startswith(f"agegender: error: {message}") and err.count("\n") == 1, err
    for argv, message in [(["--max-pixels", "0"], "--max-pixels must be at least 1"),
                          (["--max-pixels", "-5"], "--max-pixels must be at least 1"),
                          (["--chips", "--save-chips", str(tmp_path / "c")], "with --chips the inputs are chips")]:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["predict", *argv, str(chips_dir / "a.png")])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_path_with_spaces_around_it_gets_a_hint(capsys, monkeypatch, chips_dir):
    path = str(chips_dir / "a.png")
    code, out, err = run(capsys, "predict", "--chips", stdin=f"  {path} \n", monkeypatch=monkeypatch)
    assert code == 1
    assert f"  {path} : no such file or folder ('{path}', without the spaces around it, exists)" in err


def test_without_pillow_one_line_and_exit_2(capsys, monkeypatch, chips_dir):
    """A missing dependency is a setup error: said once, before any file, not once per file."""
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    code, out, err = run(capsys, "predict", "--chips", str(chips_dir))
    assert code == 2
    assert err == "agegender: error: reading image files needs pillow: pip install 'agegender-kit[image]'\n"


@pytest.mark.parametrize("raised", [
    OSError(28, "No space left on device"),
    pytest.param("ModelFileError", id="ModelFileError"),
    pytest.param("InputError", id="InputError")])
def test_every_command_turns_setup_errors_into_one_line(capsys, monkeypatch, chips_dir, raised):
    """ModelFileError, InputError and OSError anywhere outside one file's reading: one line, exit 2."""
    import refimpl
    from agegender import backends

    if isinstance(raised, str):
        raised = getattr(refimpl, raised)("weights.onnx: something is wrong with it")

    def fails(*args, **kwargs):
        raise raised
    monkeypatch.setattr(backends, "available", fails)
    code, out, err = run(capsys, "backends")
    assert code == 2 and err.startswith("agegender: error: ") and err.count("\n") == 1, err

    class FullDisk(io.StringIO):
        def write(self, text):
            raise raised
    monkeypatch.setattr(sys, "stdout", FullDisk())
    code = cli.main(["predict", "--chips", str(chips_dir / "a.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("agegender: error: ") and err.count("\n") == 1, err
    assert ("No space left on device" if isinstance(raised, OSError) else "something is wrong") in err
