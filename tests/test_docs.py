"""Every Python example in README.md and docs/*.md runs as written, and the Markdown fences are balanced.

Each ```python block runs alone in a fresh interpreter (an example may not lean on names from another), in a
folder that looks like the repository root (every top-level entry linked) plus the few input files the examples
name and a user has to bring: a photo and face chips (UTKFace chips where AGEGENDER_UTKFACE is set, else
synthetic ones). What an example writes lands in that folder, not in the repository.

A block that cannot run here (a cluster, a board) is left out by an HTML comment on the line before its fence,
`<!-- not run: REASON -->`; the reason is required and is reported as the skip's reason. Use it sparingly.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from agegender_testdata import encode, random_chips, scene_with_chip
from conftest import ROOT

MARKDOWN = ["README.md"] + sorted(os.path.join("docs", n) for n in os.listdir(os.path.join(ROOT, "docs"))
                                  if n.endswith(".md"))
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(\S.*?)\s*-->\s*$")
TIMEOUT_S = 600                 # one block; numba's first compile under a busy 2-core machine takes minutes


def fenced_blocks(text, strict=True):
    """[(line number of the opening fence, info string, code, reason not to run or None)]; ValueError for an
    unclosed fence (strict=False: the blocks before it; test_every_fence_is_closed reports it).

    CommonMark: a fence closes on a line with only the same character, at least as many, and nothing but
    spaces after it (so "``` text" does not close one)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        marker, info = opening.group(2), opening.group(3).strip()
        reason = NOT_RUN.match(lines[i - 1]) if i > 0 else None
        start = i + 1
        close = next((j for j in range(start, len(lines))
                      if re.fullmatch(rf"\s*{re.escape(marker[0])}{{{len(marker)},}}\s*", lines[j])), None)
        if close is None and not strict:
            break
        if close is None:
            raise ValueError(f"line {i + 1}: the fence {marker}{info} is never closed")
        body = [line[len(opening.group(1)):] if line.startswith(opening.group(1)) else line.lstrip()
                for line in lines[start:close]]
        blocks.append((start, info.split()[0] if info else "", "\n".join(body) + "\n",
                       reason.group(1) if reason else None))
        i = close + 1
    return blocks


def read(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        return f.read()


def python_blocks(left_out=False):
    """The Python blocks to run; left_out=True: those marked not to run, as (doc, line, reason).

    A block left out is not collected as a skipped test (CI fails on any skip): test_blocks_left_out_say_why
    lists them instead."""
    params, skipped = [], []
    for doc in MARKDOWN:
        for line, info, code, reason in fenced_blocks(read(doc), strict=False):
            if info in ("python", "py"):
                if reason:
                    skipped.append((doc, line, reason))
                else:
                    params.append(pytest.param(doc, line, code, id=f"{doc}:{line}"))
    return skipped if left_out else params


def test_blocks_left_out_say_why():
    """Few blocks are left out, each with a reason that names what it needs (a cluster, a board, a package)."""
    left_out = python_blocks(left_out=True)
    assert len(left_out) <= 5, left_out
    for doc, line, reason in left_out:
        assert re.search(r"\bneeds\b", reason), f"{doc}:{line}: say what the block needs: {reason!r}"


@pytest.mark.parametrize("doc", MARKDOWN)
def test_every_fence_is_closed(doc):
    fenced_blocks(read(doc))          # raises, naming the line, where a fence runs to the end of the file


def test_a_fence_with_text_after_it_does_not_close_a_block():
    """The README once closed a block with "``` An epoch took...", which leaves it open to the end."""
    with pytest.raises(ValueError, match="line 1"):
        fenced_blocks("```bash\nls\n``` An epoch took two minutes\n## Layout\n")
    assert fenced_blocks("```bash\nls\n```\ntext\n") == [(1, "bash", "ls\n", None)]


def test_the_not_run_marker_needs_a_reason_and_is_read_from_the_line_before_the_fence():
    text = "<!-- not run: needs a SLURM cluster -->\n```python\n1\n```\n<!-- not run: -->\n```python\n2\n```\n"
    assert [reason for *_, reason in fenced_blocks(text)] == ["needs a SLURM cluster", None]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A stand-in for the repository root: its entries linked, plus the photo and chips the examples read."""
    folder = tmp_path_factory.mktemp("docs")
    for name in os.listdir(ROOT):
        if not name.startswith(".") and name not in ("build", "runs"):
            os.symlink(os.path.join(ROOT, name), folder / name)
    pytest.importorskip("PIL", reason="the examples read images with pillow (the `image` extra)")
    chip = random_chips(1, seed=3)[0]
    utkface = os.environ.get("AGEGENDER_UTKFACE", "")
    if os.path.isdir(utkface):                       # a real face, so the photo examples find one
        from PIL import Image

        name = sorted(n for n in os.listdir(utkface) if n.endswith(".jpg"))[0]
        chip = np.asarray(Image.open(os.path.join(utkface, name)).convert("RGB"))
    (folder / "chip.jpg").write_bytes(encode(chip, "JPEG", quality=95))
    (folder / "chips").mkdir()
    (folder / "chips" / "astronaut.png.face0.png").write_bytes(encode(chip, "PNG"))
    photo = np.asarray(scene_with_chip(chip, 1.2, 0))
    for name in ("astronaut.png", "photo.jpg"):
        (folder / name).write_bytes(encode(photo, "PNG" if name.endswith(".png") else "JPEG"))
    return folder


@pytest.mark.parametrize("doc, line, code", python_blocks())
def test_python_example_runs(doc, line, code, workdir):
    run = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    assert run.returncode == 0, f"{doc}:{line}: the example fails:\n{code}\n{run.stderr[-3000:]}"


def test_every_document_with_python_examples_is_collected():
    """The examples this file runs: the README's and predict.md's at least (a rename would drop them silently)."""
    docs = {param.values[0] for param in python_blocks()}
    assert {"README.md", os.path.join("docs", "predict.md")} <= docs, docs


def test_readme_model_table_is_the_cards():
    """README's table of the bundled model's figures is the model card's, number for number (both data sets, ours
    and the package's), so retraining cannot leave the README behind."""
    import json

    with open(os.path.join(ROOT, "weights", "agegender.card.json")) as f:
        card = json.load(f)
    names = {"UTKFace": "utkface", "AAF": "aaf"}
    rows = [line for line in open(os.path.join(ROOT, "README.md")).read().splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().split(",")[0] in names]
    seen = set()
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = names[cells[0].split(",")[0]]
        entry = card["sets"][name]
        which = "ours" if cells[1].startswith("this model") else "package"
        want = (entry if which == "ours" else entry["baseline"])["metrics"]["ensemble"]
        assert cells[2:5] == [f"{want['mae']:.2f}", f"{want['ca5']:.1%}", f"{want['gender_acc']:.1%}"], (
            f"README.md: {line!r}; the card says MAE {want['mae']:.2f}, CA(5) {want['ca5']:.1%}, gender "
            f"{want['gender_acc']:.1%}")
        seen.add((name, which))
    assert seen == {(n, w) for n in names.values() for w in ("ours", "package")}, f"README's table has {seen}"
