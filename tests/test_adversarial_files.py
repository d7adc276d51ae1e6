"""Crafted files and names against `agegender predict`: outputs that would collide or replace something, symbolic
links planted at output paths, names that are not UTF-8 or hold a newline, memory with many faceless photos.

What the kit promises (agegender/outdir.py, docs/predict.md): --annotate and --save-chips mirror the
inputs' paths below their common folder and keep the whole input name (x.jpg -> x.jpg.annotated.png,
x.jpg.face0.png), never replace an input nor an existing entry (unless --overwrite, and then never an
input), never write through a symbolic link, and the run says how many files it wrote: exactly the
files that are there afterwards. File names are printed with output.escape_name in every format.
"""
import csv
import hashlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from agegender import align, cli, detect
from agegender.output import escape_name, unescape_name
from agegender_testdata import ROOT, agegender_peak_rss, encode, random_chips

pytest.importorskip("PIL", reason="reading image files needs pillow (the `image` extra)")


class TwoFaces:
    """Stands in for dlib: two faces in a photo whose mean is above 10, none in a dark one (fast, no extra)."""

    def __init__(self, threshold=0.0):
        pass

    def __call__(self, image):
        """image: uint8 RGB or an images.Picture, as dlib's FaceDetector takes."""
        if np.asarray(image).mean() <= 10:
            return []
        found = []
        for i, size in enumerate((60, 40)):
            points = align.template_points(size=size) + (5 + 70 * i, 5)
            found.append(detect.Detection((5 + 70 * i, 5, 5 + 70 * i + size, 5 + size), points, 1.0 - i / 2))
        return found


@pytest.fixture
def fake_detector(monkeypatch):
    monkeypatch.setattr(detect, "FaceDetector", TwoFaces)


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def photo(path, seed, dark=False):
    """A 120 x 160 PNG or JPEG (by extension) with two fake faces, or none when dark."""
    image = random_chips(1, size=160, seed=seed)[0][:120]
    if dark:
        image = image // 64
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image, "JPEG" if path.suffix == ".jpg" else "PNG"))
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_below(folder):
    """Every regular file and link below folder, as paths relative to it (temporary .part files included)."""
    found = set()
    for here, _, names in os.walk(folder):
        found |= {os.path.relpath(os.path.join(here, n), folder) for n in names}
    return found


def wrote(err, option):
    """The count of files the run says it wrote for --annotate / --save-chips (its summary line)."""
    line = next(x for x in err.splitlines() if x.startswith(f"agegender: {option}: wrote "))
    return int(line.split(" wrote ")[1].split()[0])


# -- outputs that collide, replace inputs or existing files ----------------------------------------------------
def test_same_names_in_two_folders_and_two_extensions_get_four_outputs(capsys, tmp_path, fake_detector):
    """a/x.jpg, b/x.jpg, x.jpg, x.png: four inputs, four annotated copies and eight chips, none lost."""
    inputs = tmp_path / "in"
    for i, name in enumerate(["a/x.jpg", "b/x.jpg", "x.jpg", "x.png"]):
        photo(inputs / name, seed=i)
    code, out, err = run(capsys, "predict", "--csv", "--annotate", tmp_path / "ann", "--save-chips",
                         tmp_path / "chips", inputs)
    assert code == 0, err
    assert files_below(tmp_path / "ann") == {"a/x.jpg.annotated.png", "b/x.jpg.annotated.png",
                                             "x.jpg.annotated.png", "x.png.annotated.png"}
    assert files_below(tmp_path / "chips") == {f"{n}.face{i}.png" for n in ["a/x.jpg", "b/x.jpg", "x.jpg", "x.png"]
                                               for i in (0, 1)}
    assert wrote(err, "--annotate") == 4 and wrote(err, "--save-chips") == 8
    assert len(list(csv.DictReader(io.StringIO(out)))) == 8


def test_files_named_on_the_command_line_mirror_their_common_folder(capsys, tmp_path, fake_detector):
    first, second = photo(tmp_path / "a" / "x.jpg", 1), photo(tmp_path / "b" / "c" / "x.jpg", 2)
    code, out, err = run(capsys, "predict", "--annotate", tmp_path / "ann", first, second, first)
    assert code == 0, err
    assert files_below(tmp_path / "ann") == {"a/x.jpg.annotated.png", "b/c/x.jpg.annotated.png"}
    assert wrote(err, "--annotate") == 2                          # the file named twice is written once


def test_output_folder_is_the_input_folder_and_a_rerun_keeps_everything(capsys, tmp_path, fake_detector):
    """Outputs beside the photos replace none of them, and a rerun neither reads them as photos nor rewrites them."""
    for i, name in enumerate(["x.jpg", "x.png", "sub/y.png"]):
        photo(tmp_path / name, seed=i)
    before = {name: digest(tmp_path / name) for name in files_below(tmp_path)}
    code, out, err = run(capsys, "predict", "--json", "--annotate", tmp_path, "--save-chips", tmp_path, tmp_path)
    assert code == 0, err
    assert {name: digest(tmp_path / name) for name in before} == before
    outputs = files_below(tmp_path) - set(before)
    assert len(outputs) == wrote(err, "--annotate") + wrote(err, "--save-chips") == 3 + 6
    rows = json.loads(out)
    stamps = {name: os.stat(tmp_path / name).st_mtime_ns for name in outputs}
    code, out, err = run(capsys, "predict", "--json", "--annotate", tmp_path, "--save-chips", tmp_path, tmp_path)
    assert code == 0, err
    assert json.loads(out) == rows                                # the outputs were not taken for photos
    assert files_below(tmp_path) == set(before) | outputs
    assert {name: os.stat(tmp_path / name).st_mtime_ns for name in outputs} == stamps
    assert wrote(err, "--annotate") == 0 and "kept 3 that already existed (--overwrite replaces them)" in err


def test_existing_file_is_kept_unless_overwrite(capsys, tmp_path, fake_detector):
    photo(tmp_path / "in" / "x.jpg", 1)
    mine = tmp_path / "ann" / "x.jpg.annotated.png"
    mine.parent.mkdir()
    mine.write_bytes(b"somebody's file")
    code, out, err = run(capsys, "predict", "--annotate", tmp_path / "ann", tmp_path / "in")
    assert code == 0, err
    assert mine.read_bytes() == b"somebody's file"
    assert wrote(err, "--annotate") == 0
    assert f"kept 1 that already existed (--overwrite replaces them), e.g. {mine}" in err
    code, out, err = run(capsys, "predict", "--overwrite", "--annotate", tmp_path / "ann", tmp_path / "in")
    assert code == 0, err
    assert mine.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and wrote(err, "--annotate") == 1


def test_overwrite_never_replaces_an_input(capsys, tmp_path, fake_detector):
    """x.jpg's copy would be x.jpg.annotated.png, itself named as an input: refused even with --overwrite."""
    source = photo(tmp_path / "x.jpg", 1)
    also_input = photo(tmp_path / "x.jpg.annotated.png", 2)
    kept = digest(also_input)
    code, out, err = run(capsys, "predict", "--overwrite", "--annotate", tmp_path, source, also_input)
    assert code == 1
    assert digest(also_input) == kept
    assert f"{source}: annotating failed: " in err and "would replace an input of this run" in err
    assert not any(name.endswith(".part") for name in files_below(tmp_path))


def test_symbolic_links_at_outputs_are_never_followed(capsys, tmp_path, fake_detector):
    photo(tmp_path / "in" / "x.jpg", 1)
    photo(tmp_path / "in" / "sub" / "y.jpg", 2)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out_dir = tmp_path / "ann"
    out_dir.mkdir()
    (out_dir / "x.jpg.annotated.png").symlink_to(victim)
    (out_dir / "x.jpg.face0.png").symlink_to(tmp_path / "created_through_link")          # dangling
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out_dir / "sub").symlink_to(elsewhere)                                                # a folder link in DIR
    code, out, err = run(capsys, "predict", "--annotate", out_dir, "--save-chips", out_dir, tmp_path / "in")
    assert code == 1                                                # y.jpg's outputs cannot go below the link
    assert victim.read_text() == "precious" and not (tmp_path / "created_through_link").exists()
    assert os.listdir(elsewhere) == []
    assert "sub/y.jpg: annotating failed: " in err and "not a folder" in err
    assert (out_dir / "x.jpg.annotated.png").is_symlink() and (out_dir / "x.jpg.face0.png").is_symlink()
    assert wrote(err, "--annotate") == 0 and wrote(err, "--save-chips") == 1         # x.jpg.face1.png only
    code, out, err = run(capsys, "predict", "--overwrite", "--annotate", out_dir, tmp_path / "in" / "x.jpg")
    assert code == 0, err
    assert victim.read_text() == "precious"
    link_was = out_dir / "x.jpg.annotated.png"
    assert not link_was.is_symlink() and link_was.read_bytes()[:4] == b"\x89PNG"


def test_faceless_photos_get_their_annotated_copy(capsys, tmp_path, fake_detector):
    photo(tmp_path / "in" / "dark.png", 1, dark=True)
    photo(tmp_path / "in" / "faces.png", 2)
    code, out, err = run(capsys, "predict", "--annotate", tmp_path / "ann", tmp_path / "in")
    assert code == 0, err
    assert "no face found" in out
    assert files_below(tmp_path / "ann") == {"dark.png.annotated.png", "faces.png.annotated.png"}
    from PIL import Image
    copy = np.asarray(Image.open(tmp_path / "ann" / "dark.png.annotated.png"))
    from agegender import read_image
    assert np.array_equal(copy, read_image(tmp_path / "in" / "dark.png"))          # nothing drawn on it


def test_an_interrupted_run_is_completed_by_a_rerun(capsys, tmp_path, fake_detector, monkeypatch):
    """A write that fails half-way leaves no partial file under the final name and no temporary file;
    running the same command again writes what is missing and keeps what was finished."""
    from PIL import Image

    for i in range(3):
        photo(tmp_path / "in" / f"p{i}.png", seed=i)
    real_save, calls = Image.Image.save, []

    def failing_second(self, fp, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"half a PNG")
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_second)
    code, out, err = run(capsys, "predict", "--annotate", tmp_path / "ann", tmp_path / "in")
    assert code == 1 and "p1.png: annotating failed: No space left on device" in err
    assert files_below(tmp_path / "ann") == {"p0.png.annotated.png", "p2.png.annotated.png"}
    finished = {n: digest(tmp_path / "ann" / n) for n in files_below(tmp_path / "ann")}
    monkeypatch.setattr(Image.Image, "save", real_save)
    code, out, err = run(capsys, "predict", "--annotate", tmp_path / "ann", tmp_path / "in")
    assert code == 0, err
    assert wrote(err, "--annotate") == 1 and "kept 2" in err
    assert files_below(tmp_path / "ann") == {f"p{i}.png.annotated.png" for i in range(3)}
    assert {n: digest(tmp_path / "ann" / n) for n in finished} == finished


# outdir.py writes through openat (a descriptor of the output folder) where os.supports_dir_fd lists every call it
# makes, else through plain paths. Its check names os.rename: CPython never lists os.replace there, though both are
# renameat (naming os.replace once sent every write down the plain paths). Both routes run below.
OPENAT_CALLS = {os.open, os.mkdir, os.link, os.rename, os.unlink, os.stat} <= os.supports_dir_fd


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux has openat, linkat and renameat")
def test_the_openat_route_is_the_one_taken_on_linux():
    from agegender import outdir

    assert OPENAT_CALLS and outdir._AT_FDS, "outdir.py writes through plain paths on Linux, not through openat"


@pytest.mark.parametrize("openat", [False, pytest.param(True, marks=pytest.mark.skipif(
    not OPENAT_CALLS, reason="no openat, linkat, renameat here"))])
def test_a_relative_output_folder_is_checked_inside_itself_not_in_the_current_folder(capsys, tmp_path, monkeypatch,
                                                                                    fake_detector, openat):
    """Relative folders, run from the photo's folder: `--annotate .` puts x.jpg.annotated.png beside the photo;
    then `--annotate ann` must still write ann/x.jpg.annotated.png (the file of that name in the current folder
    is not in ann), and a rerun into ann keeps it, named as the summary names kept files (DIR/NAME)."""
    from agegender import outdir

    monkeypatch.setattr(outdir, "_AT_FDS", openat)
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "x.jpg", 1)
    code, out, err = run(capsys, "predict", "--annotate", ".", "x.jpg")
    assert code == 0 and wrote(err, "--annotate") == 1, err
    beside = digest(tmp_path / "x.jpg.annotated.png")
    code, out, err = run(capsys, "predict", "--annotate", "ann", "x.jpg")
    assert code == 0 and wrote(err, "--annotate") == 1 and "kept" not in err, err
    assert files_below(tmp_path / "ann") == {"x.jpg.annotated.png"}
    written = digest(tmp_path / "ann" / "x.jpg.annotated.png")
    code, out, err = run(capsys, "predict", "--annotate", "ann", "x.jpg")
    assert code == 0 and wrote(err, "--annotate") == 0, err
    kept = os.path.join("ann", "x.jpg.annotated.png")
    assert f"kept 1 that already existed (--overwrite replaces them), e.g. {kept}" in err
    assert digest(tmp_path / "ann" / "x.jpg.annotated.png") == written
    assert digest(tmp_path / "x.jpg.annotated.png") == beside


def test_output_folder_that_is_a_file_is_one_line_and_exit_2(capsys, tmp_path, fake_detector):
    photo(tmp_path / "x.png", 1)
    (tmp_path / "taken").write_text("a file")
    code, out, err = run(capsys, "predict", "--annotate", tmp_path / "taken", tmp_path / "x.png")
    assert code == 2 and err == f"agegender: error: {tmp_path / 'taken'}: exists and is not a folder\n"


# -- names that are not UTF-8, newlines in names ----------------------------------------------------------
ODD_NAMES = [b"caf\xe9.png", b"line\nbreak.png", b"back\\slash.png", "zo\u00eb.png".encode()]
ESCAPED = ["caf\\xe9.png", "line\\x0abreak.png", "back\\\\slash.png", "zo\u00eb.png"]     # the documented scheme


@pytest.fixture
def odd_folder(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    for i, name in enumerate(ODD_NAMES):
        with open(os.path.join(os.fsencode(folder), name), "wb") as stream:
            stream.write(encode(random_chips(1, size=64, seed=i)[0], "PNG"))
    return folder


def test_escape_name_is_reversible():
    for raw, text in zip(ODD_NAMES, ESCAPED):
        assert escape_name(os.fsdecode(raw)) == text and os.fsencode(unescape_name(text)) == raw
    for raw in [b"\\x41", b"\x00\x7f\xc2\x85\xff\xfe", b"\xe2\x82", b"plain name.jpg", b"\\\\xff"]:
        assert os.fsencode(unescape_name(escape_name(os.fsdecode(raw)))) == raw
    assert escape_name("plain name.jpg") == "plain name.jpg"


@pytest.mark.parametrize("form", ["table", "csv", "json"])
def test_odd_names_in_every_format(capsys, odd_folder, form):
    code, out, err = run(capsys, "predict", "--chips", *([f"--{form}"] if form != "table" else []), odd_folder)
    assert code == 0, err
    prefix = escape_name(str(odd_folder)) + os.sep
    if form == "table":
        rows = out.splitlines()[1:]
        assert len(rows) == len(ODD_NAMES)                                 # no name split a row
        names = [next(prefix + e for e in ESCAPED if row.startswith(prefix + e + "  ")) for row in rows]
    else:
        rows = list(csv.DictReader(io.StringIO(out))) if form == "csv" else json.loads(out)
        names = [row["file"] for row in rows]
    assert sorted(names) == sorted(prefix + e for e in ESCAPED)
    back = {os.fsencode(unescape_name(name)) for name in names}
    assert back == {os.path.join(os.fsencode(odd_folder), raw) for raw in ODD_NAMES}


def test_odd_names_from_stdin_and_on_a_pipe(odd_folder, tmp_path):
    """A real process: stdout is a UTF-8 pipe, the paths come on stdin as bytes; outputs keep the input's bytes."""
    stdin = b"".join(os.path.join(os.fsencode(odd_folder), raw) + b"\n" for raw in ODD_NAMES if b"\n" not in raw)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), LC_ALL="C.UTF-8")
    result = subprocess.run([sys.executable, "-m", "agegender", "predict", "--chips", "--csv", "--annotate",
                             str(tmp_path / "ann")], input=stdin, capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode("utf-8"))))
    assert sorted(os.path.basename(r["file"]) for r in rows) == sorted(e for e in ESCAPED if "\\x0a" not in e)
    assert sorted(os.listdir(os.fsencode(tmp_path / "ann"))) == sorted(
        raw + b".annotated.png" for raw in ODD_NAMES if b"\n" not in raw)


def test_odd_names_from_a_binary_stdin_in_this_process(capsys, monkeypatch, odd_folder):
    """sys.stdin with a .buffer (as Python makes it) is read as bytes: a name that is not UTF-8 reaches the file,
    where the text layer (strict UTF-8 here) would fail on it. A text stdin without .buffer (io.StringIO, put
    there by a caller) is read as text: test_cli.py's stdin tests."""
    names = [raw for raw in ODD_NAMES if b"\n" not in raw]
    data = b"".join(os.path.join(os.fsencode(odd_folder), raw) + b"\n" for raw in names)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="strict"))
    code, out, err = run(capsys, "predict", "--chips", "--json", "-")
    assert code == 0, err
    assert [os.fsencode(unescape_name(row["file"])) for row in json.loads(out)] == [
        os.path.join(os.fsencode(odd_folder), raw) for raw in names]

def test_names_on_a_terminal_that_is_not_utf8(tmp_path):
    """A latin-1 stdout cannot encode a CJK name: written as \\uXXXX (documented as not reversible), no crash."""
    (tmp_path / "\u5199\u771f.png").write_bytes(encode(random_chips(1, size=64)[0], "PNG"))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONIOENCODING="latin-1")
    result = subprocess.run([sys.executable, "-m", "agegender", "predict", "--chips", "--csv", str(tmp_path)],
                            capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"\\u5199\\u771f.png,0," in result.stdout


def test_odd_names_in_failure_lines(capsys, tmp_path):
    for raw in (b"bad\xff.png", b"bad\nnews.png"):
        with open(os.path.join(os.fsencode(tmp_path), raw), "wb") as stream:
            stream.write(b"not an image")
    code, out, err = run(capsys, "predict", "--chips", tmp_path)
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == "agegender: 2 of 2 files failed:" and len(lines) == 3
    assert {line.split(": ")[0].strip() for line in lines[1:]} == {
        escape_name(str(tmp_path)) + os.sep + n for n in ("bad\\xff.png", "bad\\x0anews.png")}


# -- memory with many faceless photos ------------------------------------------------------------------
NO_FACES = """
from agegender import detect
class NoFaces:
    def __init__(self, threshold=0.0):
        pass
    def __call__(self, image):
        return []
detect.FaceDetector = NoFaces
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc (Linux)")
def test_annotate_memory_is_flat_in_the_number_of_faceless_photos(tmp_path):
    """Peak resident memory of a real process, 4 vs 16 faceless 2000 x 1500 photos (9 MB decoded each).
    Keeping every photo, as before, adds 12 x 9 MB = 108 MB; the bound is two photos' worth."""
    from PIL import Image

    width, height = 2000, 1500
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    data = encode(ramp.astype(np.uint8), "JPEG", quality=80)
    peaks = {}
    for count in (4, 16):
        folder = tmp_path / f"in{count}"
        folder.mkdir()
        for i in range(count):
            (folder / f"p{i:02d}.jpg").write_bytes(data)
        peaks[count] = agegender_peak_rss(["predict", "--backend", "refimpl", "--annotate", tmp_path / f"ann{count}",
                                           folder], prelude=NO_FACES)
    photo_bytes = width * height * 3
    assert peaks[16] - peaks[4] < 2 * photo_bytes, (
        f"peak {peaks[4] / 1e6:.0f} MB with 4 photos, {peaks[16] / 1e6:.0f} MB with 16")
    assert len(os.listdir(tmp_path / "ann16")) == 16
    assert Image.open(tmp_path / "ann4" / "p00.jpg.annotated.png").size == (width, height)
