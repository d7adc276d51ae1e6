"""The repository stands alone: nothing in it points outside itself, and a missing data set says how to get it.

A user's clone has no folder beside it; only .ci/run, the harness of this build machine, may name the data sets
there (to set AGEGENDER_UTKFACE and AGEGENDER_AAF).
"""
import os
import re
import subprocess
import sys

from conftest import ROOT

SKIPPED_FOLDERS = {".git", ".venv", "build", "runs", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}
MAY_NAME_OUTSIDE = {os.path.join(".ci", "run")}
# This file names the strings it looks for
SELF = os.path.relpath(os.path.abspath(__file__), ROOT)


def text_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_FOLDERS and not d.endswith(".egg-info")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, ROOT), f.read()
            except (UnicodeDecodeError, OSError):       # binary files: the ONNX model, images, compiled code
                continue


# ../shared written as a path, or built: os.path.join(ROOT, "..", "shared"), ROOT.parent / "shared"
OUTSIDE = re.compile(r"""\.\.[/\\]shared\b|["']\.\.["'],\s*["']shared["']|\.parent\s*/\s*["']shared["']""")


def test_no_path_leads_outside_the_repository():
    bad = [f"{path}:{text[:match.start()].count(chr(10)) + 1}" for path, text in text_files()
           if path not in MAY_NAME_OUTSIDE | {SELF} for match in OUTSIDE.finditer(text)]
    assert not bad, f"the data beside the repository (not in a user's clone) is named in: {', '.join(sorted(bad))}"


def test_the_pattern_finds_each_way_of_naming_the_folder_beside_the_repository():
    for text in ("see ../shared/datasets", 'os.path.join(ROOT, "..", "shared", "x")', 'ROOT.parent / "shared"',
                 "..\\shared\\datasets"):
        assert OUTSIDE.search(text), text
    assert not OUTSIDE.search("shared between threads; ../sharedlib")


def test_the_architecture_is_cited_by_its_path_in_the_repository():
    assert os.path.isfile(os.path.join(ROOT, "docs", "architecture.md"))
    unpathed = "ARCHITECTURE" + ".md"
    bad = [path for path, text in text_files() if unpathed in text and path != SELF]
    assert not bad, f"{unpathed} is not in the repository (docs/architecture.md is): named in {', '.join(bad)}"


def test_training_without_a_data_set_says_how_to_get_it():
    env = {k: v for k, v in os.environ.items() if k != "AGEGENDER_UTKFACE"}
    model = os.path.join(ROOT, "weights", "agegender.onnx")
    run = subprocess.run([sys.executable, "-m", "training", "evaluate", model], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    lines = run.stderr.strip().splitlines()
    assert run.returncode != 0 and len(lines) == 1, run.stderr
    assert "AGEGENDER_UTKFACE" in lines[0] and "--data" in lines[0] and "susanqq.github.io/UTKFace" in lines[0], lines
