"""`agegender predict --parquet`, its runs on Dask, and `python -m training folds`: every file exactly once,
resumable without duplicate rows, and the values of the serial Estimator.

One LocalCluster of 2 processes (1 thread each) serves the module. Its workers carry agegender/scale.py's
test hooks in their environment, inert until a test arms them: a file whose removal makes a task exit its
process, and a 0.5 s pause before each part is written (so a client can be killed mid-run). Every call
that waits on the cluster has a hard time limit (within(), subprocess timeouts).
"""
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet", reason="--parquet needs pyarrow (the scale extra)")
pytest.importorskip("distributed", reason="the cluster tests need dask[distributed] (the scale extra)")
pytest.importorskip("PIL", reason="reading image files needs pillow (the `image` extra)")

from agegender import cli, scale  # noqa: E402
from agegender.output import unescape_name  # noqa: E402
from agegender_testdata import ROOT, encode, needs_detector, random_chips, scene_with_chip, utkface_chips  # noqa: E402
from conftest import assert_import_stays_light  # noqa: E402

LIMIT = 180          # seconds for one cluster run on 2 shared cores (a few seconds when the machine is idle)
CHUNK_DELAY = 0.5    # seconds each chunk waits on the workers before writing its part (the hook)
FLOATS = ["age", "male_probability", "score", "age_final", "gender_final", "age_virtual", "gender_virtual",
          "age_low", "gender_low"]


def within(seconds, function, *args, **kwargs):
    """function(*args, **kwargs), failing the test when it takes longer than `seconds`."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(function, *args, **kwargs).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(client, crash trigger path) of a LocalCluster of 2 worker processes."""
    from distributed import Client, LocalCluster

    trigger = tmp_path_factory.mktemp("hooks") / "crash-once"
    env = {scale.TEST_CRASH_ENV: str(trigger), scale.TEST_DELAY_ENV: str(CHUNK_DELAY)}
    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                         silence_logs=logging.CRITICAL, env=env)
    client = Client(local)
    yield client, trigger
    client.close()
    local.close()


@contextlib.contextmanager
def workers_elsewhere(client, folder):
    """The workers' working folder is `folder` (made empty), not ours, as on other machines, for the duration."""
    before = client.run(os.getcwd)
    folder.mkdir()
    client.run(os.chdir, str(folder))
    try:
        yield
    finally:
        for address, folder in before.items():
            client.run(os.chdir, folder, workers=[address])


def chips_folder(folder, n=8):
    """n random chips (one under a name that is not UTF-8), a truncated PNG and a text file named .jpg."""
    folder.mkdir(exist_ok=True)
    chips = random_chips(n, size=64, seed=5)
    for i, chip in enumerate(chips[:-1]):
        (folder / f"c{i:02d}.png").write_bytes(encode(chip, "PNG"))
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as f:
        f.write(encode(chips[-1], "PNG"))
    (folder / "broken.png").write_bytes(encode(chips[0], "PNG")[:60])
    (folder / "notes.jpg").write_bytes(b"not an image")
    return folder


def read_rows(out):
    """OUT as a list of dicts (parts in name order, rows in file order)."""
    return pq.read_table(out).to_pylist()


def files_once(rows):
    """{file: its rows}; the files of error and null-face rows appear once."""
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    for file, found in by_file.items():
        faces = [r["face"] for r in found]
        assert faces == list(range(len(found))) or faces == [None], f"{file}: faces {faces}"
    return by_file


def part_files(out):
    return sorted(n for n in os.listdir(out) if n.startswith("part-"))


def test_parquet_without_dask_columns_values_errors_names_and_rerun(capsys, tmp_path):
    from agegender import Estimator, backends, read_image

    backend = backends.available()[0]
    # the kernels compute each image on its own, so a batch changes no bit; numpy's BLAS (refimpl) sums
    # a batch in another order than one image (7.6e-6 measured in test_cli's batch test): bound 1e-4
    tolerance = 0.0 if backend != backends.REFERENCE else 1e-4
    folder, out = chips_folder(tmp_path / "in"), str(tmp_path / "out.parquet")
    argv = ["predict", "--chips", "--heads", "--backend", backend, "--parquet", out, "--chunk-size", "4", str(folder)]
    assert cli.main(argv) == 1                                      # two files failed: listed, and rows in OUT
    err = capsys.readouterr().err
    assert "wrote 3 parts (10 rows for 10 files)" in err and "broken.png" in err and "notes.jpg" in err
    table = pq.read_table(out)
    import pyarrow as pa

    assert table.schema.names == ["file", "face", "left", "top", "right", "bottom", "age", "gender",
                                  "male_probability", "score", "age_final", "gender_final", "age_virtual",
                                  "gender_virtual", "age_low", "gender_low", "error"]
    assert all(table.schema.field(name).type == pa.float32() for name in FLOATS)
    by_file = files_once(table.to_pylist())
    assert len(by_file) == 10 and len(part_files(out)) == 3
    one_by_one = Estimator(backend=backend, batch_size=1, threads=1)
    for text, (row,) in by_file.items():
        path = unescape_name(text)                                  # the escaping gives the name back
        assert os.path.exists(path), text
        if os.path.basename(path) in ("broken.png", "notes.jpg"):
            assert row["face"] is None and row["age"] is None and row["error"], row
            continue
        assert row["error"] is None and (row["face"], row["left"], row["bottom"], row["score"]) == (0, 0, 63, None)
        heads = one_by_one.predict_chips(read_image(path))[0].heads
        for name in ("age_final", "gender_final", "age_virtual", "gender_virtual", "age_low", "gender_low"):
            assert abs(row[name] - np.float32(heads[name])) <= tolerance, (text, name)
        assert abs(row["age"] - np.float32(heads["age"])) <= tolerance and row["gender"] in ("male", "female")
    assert "caf\\xe9.png" in {os.path.basename(t) for t in by_file}

    # the same command again: nothing left to do, nothing rewritten
    before = {n: os.stat(os.path.join(out, n)).st_ino for n in part_files(out)}
    assert cli.main(argv) == 0
    assert "wrote 0 parts (0 rows for 0 files)" in capsys.readouterr().err
    assert {n: os.stat(os.path.join(out, n)).st_ino for n in part_files(out)} == before
    # a part whose manifest entry was lost (the task stopped between the two) is found, not redone
    manifest = os.path.join(out, scale.MANIFEST)
    os.remove(os.path.join(manifest, sorted(n for n in os.listdir(manifest) if n != "options.json")[0]))
    assert cli.main(argv) == 0 and "wrote 0 parts" in capsys.readouterr().err
    assert len(os.listdir(manifest)) == 4 and len(read_rows(out)) == 10
    # other options, or a folder that is not ours: refused, one line, exit 2
    assert cli.main(argv[:-1] + ["--min-score", "0.5", str(folder)]) == 2
    assert "holds results made with other options (min_score 0.0 there, 0.5 here)" in capsys.readouterr().err
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.csv").write_text("x\n")
    assert cli.main(["predict", "--chips", "--parquet", str(tmp_path / "foreign"), str(folder)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_progress_bar_counts_files(tmp_path):
    import io

    stream = io.StringIO()
    folder = chips_folder(tmp_path / "in", n=4)
    inputs, failures, _ = cli.collect_inputs([str(folder)])
    result = scale.run(inputs, str(tmp_path / "out"), scale.Settings(chips=True), failures=failures, chunk_size=4,
                       progress=True, stream=stream)
    assert (result.files, result.rows, result.parts_written) == (6, 6, 2)
    frames = stream.getvalue().split("\r")
    assert frames[1].startswith("files [") and frames[1].endswith("] 0/6")
    assert frames[2].endswith("] 4/6") and frames[-1] == f"files [{'=' * 30}] 6/6\n"


def test_usage_errors(capsys, tmp_path):
    for argv, message in [(["--workers", "2"], "--workers and --scheduler run --parquet"),
                          (["--parquet", "o", "--workers", "0"], "at least 1"),
                          (["--parquet", "o", "--json"], "leave out --json"),
                          (["--parquet", "o", "--workers", "2", "--scheduler", "tcp://x:1"], "give one of them")]:
        with pytest.raises(SystemExit) as stop:
            cli.main(["predict", "--chips"] + argv + [str(tmp_path)])
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_cluster_photos_equal_the_serial_estimator(cluster, tmp_path):
    """2 worker processes over photos with faces, faceless ones, corrupt ones and a name that is not UTF-8:
    each face row is the serial Estimator's face (box, and values unrounded to 1e-6: float32 storage of the
    same float32 outputs), one null-face row per faceless photo, one error row per bad file."""
    needs_detector()
    from agegender import Estimator, read_image, predict_to_parquet

    client, _ = cluster
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, chip in enumerate(utkface_chips(4, offset=11)):
        scene = scene_with_chip(read_image(chip), scale=1.1, angle=4 - 3 * i, seed=i)
        (folder / f"p{i}.png").write_bytes(encode(scene, "PNG"))
    with open(os.path.join(os.fsencode(folder), b"p\xff.png"), "wb") as f:
        f.write((folder / "p0.png").read_bytes())
    for i in range(2):
        noise = (np.random.default_rng(i).random((200, 260, 3)) * 255).astype(np.uint8)
        (folder / f"noise{i}.png").write_bytes(encode(noise, "PNG"))
    (folder / "cut.png").write_bytes((folder / "p1.png").read_bytes()[:300])
    (folder / "text.jpg").write_bytes(b"hello")
    out, annotated, chips = tmp_path / "faces", tmp_path / "annotated", tmp_path / "chips"
    assert within(LIMIT, predict_to_parquet, str(folder), out, client=client, chunk_size=3, annotate=annotated,
                  save_chips=chips) == str(out)
    by_file = files_once(read_rows(out))
    estimator = Estimator()
    assert len(by_file) == 9
    faces_total = 0
    for text, rows in by_file.items():
        name = os.path.basename(text)
        if name in ("cut.png", "text.jpg"):
            assert len(rows) == 1 and rows[0]["error"] and rows[0]["face"] is None, rows
            continue
        faces = estimator.predict(unescape_name(text))
        if name.startswith("noise"):
            assert faces == [] and len(rows) == 1 and rows[0]["face"] is None and rows[0]["error"] is None
            continue
        assert len(faces) == len(rows) >= 1, text
        faces_total += len(faces)
        for face, row in zip(faces, rows):
            assert (row["left"], row["top"], row["right"], row["bottom"]) == face.box
            for column, value in [("age", face.age), ("male_probability", face.male_probability),
                                  ("score", face.score)]:
                assert abs(row[column] - value) <= 1e-6 * max(1.0, abs(value)), (text, column, row[column], value)
            assert row["gender"] == face.gender and row["error"] is None
    assert "p\\xff.png" in {os.path.basename(t) for t in by_file}
    written = [os.path.join(d, n) for d, _, names in os.walk(annotated) for n in names]
    assert len(written) == 7 and not any(n.startswith(".") for n in written)    # every readable photo, no temp
    assert sum(len(names) for _, _, names in os.walk(chips)) == faces_total
    # each worker process loaded the model and detector once for these settings, however many chunks it ran
    # with as many model threads as the worker has (key: weights, backend, threads, ...)
    loads = client.run(lambda: Counter(scale.LOADS))
    assert all(count == 1 for counts in loads.values() for count in counts.values()), loads
    assert {key[2] for counts in loads.values() for key in counts} == {1}, loads
    import dask.dataframe

    assert len(dask.dataframe.read_parquet(str(out)).compute()) == sum(len(r) for r in by_file.values())


def test_relative_paths_reach_workers_in_another_working_folder(cluster, tmp_path, monkeypatch):
    """Workers on other machines do not share the client's working folder: they get absolute paths, and the
    file column keeps the paths as given."""
    from agegender import predict_to_parquet

    client, _ = cluster
    chips_folder(tmp_path / "in", n=3)
    monkeypatch.chdir(tmp_path)
    with workers_elsewhere(client, tmp_path / "elsewhere"):
        out = within(LIMIT, predict_to_parquet, "in", "out", client=client, chunk_size=2, chips=True,
                     annotate="annotated")
    rows = read_rows(os.path.join(tmp_path, out))
    assert sorted(r["file"] for r in rows) == sorted(["in/broken.png", "in/c00.png", "in/c01.png", "in/caf\\xe9.png",
                                                      "in/notes.jpg"])
    assert [r["file"] for r in rows if r["error"]] == ["in/broken.png", "in/notes.jpg"]
    assert sorted(os.listdir(tmp_path / "annotated")) == ["c00.png.annotated.png", "c01.png.annotated.png",
                                                          os.fsdecode(b"caf\xe9.png.annotated.png")]


def test_a_worker_killed_mid_run_loses_and_repeats_nothing(cluster, tmp_path):
    from agegender import predict_to_parquet

    client, trigger = cluster
    folder = chips_folder(tmp_path / "in")
    trigger.write_bytes(b"")                                        # the first task to start exits its process
    out = within(LIMIT, predict_to_parquet, str(folder), tmp_path / "out", client=client, chunk_size=1, chips=True)
    assert not trigger.exists(), "no worker process was killed: the test showed nothing"
    serial = predict_to_parquet(str(folder), tmp_path / "serial", chunk_size=1, chips=True)
    rows = read_rows(out)
    assert len(files_once(rows)) == len(rows) == 10 and len(part_files(out)) == 10
    assert rows == read_rows(serial)
    within(LIMIT, client.wait_for_workers, 2)                      # the nanny restarted it, for the next tests


def test_client_killed_then_rerun_redoes_no_part(cluster, tmp_path):
    """The client (a subprocess on the module's cluster) is killed once a part is there; the same command again
    keeps every part it finds, writes the rest, and the table equals an uninterrupted run's."""
    from agegender import predict_to_parquet

    client, _ = cluster
    folder = chips_folder(tmp_path / "in", n=12)
    out = str(tmp_path / "out")
    command = [sys.executable, "-m", "agegender", "predict", "--chips", "--parquet", out, "--chunk-size", "2",
               "--no-progress", str(folder)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    first = subprocess.Popen(command + ["--scheduler", client.scheduler.address], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        while not (os.path.isdir(out) and part_files(out)):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() - started < LIMIT, "no part was written"
            time.sleep(0.02)
    finally:
        os.killpg(first.pid, signal.SIGKILL)                       # the client and whatever it started
        first.wait(timeout=30)
    kept = {n: os.stat(os.path.join(out, n)).st_ino for n in part_files(out)}
    assert 1 <= len(kept) < 7, kept                                 # 7 chunks: the run was cut short
    # the same command, the cluster's address from DASK_SCHEDULER_ADDRESS this time; a task the dead client left
    # running on a worker may still write its part before or during it: that part is kept as well
    again = subprocess.run(command, env=dict(env, DASK_SCHEDULER_ADDRESS=client.scheduler.address),
                           capture_output=True, text=True, timeout=LIMIT)
    assert again.returncode == 1, again.stderr                      # broken.png and notes.jpg: rows with errors
    counts = re.search(r"wrote (\d+) parts? .*; (\d+) finished earlier, kept", again.stderr)
    assert counts, again.stderr
    written, earlier = int(counts.group(1)), int(counts.group(2))
    assert earlier >= len(kept) and written + earlier <= 7 and written >= 1, again.stderr
    assert {n: os.stat(os.path.join(out, n)).st_ino for n in kept} == kept          # not one of them redone
    rows = read_rows(out)
    assert len(part_files(out)) == 7 and len(files_once(rows)) == len(rows) == 14
    reference = within(LIMIT, predict_to_parquet, str(folder), tmp_path / "reference", client=client,
                       chunk_size=2, chips=True)
    assert rows == read_rows(reference) and part_files(out) == part_files(reference)


def test_workers_flag_runs_a_local_cluster(capsys, tmp_path):
    folder, out = chips_folder(tmp_path / "in", n=4), str(tmp_path / "out")
    argv = ["predict", "--chips", "--parquet", out, "--chunk-size", "2", "--annotate", str(tmp_path / "a")]
    assert within(LIMIT, cli.main, argv + ["--workers", "2", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "wrote 3 parts (6 rows for 6 files)" in err and "--annotate: wrote 4 files" in err
    from agegender import predict_to_parquet

    assert read_rows(out) == read_rows(predict_to_parquet(str(folder), tmp_path / "serial", chunk_size=2, chips=True))


def test_training_folds_on_the_cluster_then_crossval(cluster, tmp_path, capsys, monkeypatch):
    """3-fold cross-validation of 1 epoch on 9 generated chips: 2 folds first, crossval names the third as
    missing; the same command with every fold keeps the finished two and trains the third; the pooled
    metrics cover all 9 images, and each fold trained with the worker's one thread. Relative --data, --cache
    and --out, with the workers in another working folder."""
    pytest.importorskip("torch", reason="training needs the train extra")
    from PIL import Image

    from training.__main__ import main

    client, _ = cluster
    faces = tmp_path / "faces"
    faces.mkdir()
    for i, (age, gender) in enumerate([(20, 0), (30, 1), (45, 0), (60, 1), (8, 0), (33, 1), (71, 0), (25, 1), (40, 1)]):
        Image.fromarray(np.full((40, 40, 3), 20 + 22 * i, np.uint8)).save(faces / f"{age}_{gender}_0_2017010{i}.jpg")
    out = tmp_path / "cv"
    monkeypatch.chdir(tmp_path)
    argv = ["folds", "--data", "faces", "--cache", "cache", "--protocol", "kfold", "--folds", "3",
            "--epochs", "1", "--batch-size", "4", "--out", "cv", "--scheduler", client.scheduler.address]
    with workers_elsewhere(client, tmp_path / "elsewhere"):
        assert within(LIMIT, main, argv + ["--only-folds", "0", "2"]) == 0
    assert main(["crossval", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 folds pooled (6 validation images)" in printed and "1 of 3 folds missing (not finished): 1" in printed
    logs = {f: (out / "seed0" / f"fold00{f}" / "log.jsonl").read_text() for f in (0, 2)}
    with workers_elsewhere(client, tmp_path / "elsewhere-again"):
        assert within(LIMIT, main, argv + ["--json", str(tmp_path / "pooled.json")]) == 0
    printed = capsys.readouterr().out
    assert "fold 0: finished earlier" in printed and "fold 1: trained" in printed and "missing" not in printed
    assert {f: (out / "seed0" / f"fold00{f}" / "log.jsonl").read_text() for f in (0, 2)} == logs
    pooled = json.load(open(tmp_path / "pooled.json"))
    summary = pooled["seeds"]["0"]
    assert summary["folds"] == [0, 1, 2] and summary["metrics"]["ensemble"]["n"] == 9 and pooled["missing"] == {"0": []}
    from training import checkpoints

    assert checkpoints.load(out / "seed0" / "fold001" / "last.pt")["args"]["threads"] == 1


def test_imports_stay_light():
    assert_import_stays_light("import agegender, agegender.cli, agegender.scale, training.distributed",
                              ["dask", "distributed", "pyarrow", "pandas", "torch"])
