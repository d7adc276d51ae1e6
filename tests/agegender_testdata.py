"""Test inputs for the estimator and CLI tests: synthetic images made here, UTKFace chips where the dataset is.

UTKFace (non-commercial research license) is read in place and never copied into the
repository: the folder AGEGENDER_UTKFACE names (tests that need it skip, saying so, without it).
"""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def utkface_chips(count, offset=7, step=97):
    """Paths of `count` UTKFace chips spread over the set (fixed choice), or skip saying why."""
    from conftest import utkface_dir

    folder = utkface_dir()
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
    return [os.path.join(folder, n) for n in names[offset::step][:count]]


def needs_detector():
    """Skip unless the `detect` extra (dlib-bin + face-recognition-models) is installed."""
    from agegender import detect

    if not detect.available():
        pytest.skip("face detector extra not installed: pip install 'agegender-kit[detect]'")


def random_chips(n, size=200, seed=0):
    """uint8 [n, size, size, 3]: smooth random colour fields (not faces, but not flat either)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 8, 8, 3))
    full = np.kron(coarse, np.ones((1, size // 8 + 1, size // 8 + 1, 1)))[:, :size, :size]
    return np.round(255 * np.clip(full + 0.1 * rng.standard_normal(full.shape), 0, 1)).astype(np.uint8)


def encode(array, fmt, **options):
    """uint8 array -> bytes of an image file in Pillow format `fmt` (PNG, JPEG, BMP, WEBP)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def scene_with_chip(chip, scale, angle, width=640, height=480, seed=0, background=110):
    """A chip pasted into a larger gray photo, scaled and rotated (PIL, independent of align.py)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    size = int(round(chip.shape[0] * scale))
    face = Image.fromarray(chip).resize((size, size), Image.BILINEAR)
    face = face.rotate(angle, resample=Image.BILINEAR, expand=True, fillcolor=(background,) * 3)
    canvas = Image.new("RGB", (width, height), (background,) * 3)
    canvas.paste(face, (int(rng.integers(0, width - face.width)), int(rng.integers(0, height - face.height))))
    return np.asarray(canvas)


# The child reports its own VmHWM (peak resident memory of its address space) at exit. Its ru_maxrss (from
# wait4, or getrusage in the child) would not do: Linux carries the parent's peak into a child's ru_maxrss
# across exec, so a test run inside a large pytest process would read pytest's peak.
_REPORT_PEAK = """
import atexit, sys
def report():
    with open("/proc/self/status") as status:
        sys.stderr.write([line for line in status if line.startswith("VmHWM:")][0])
atexit.register(report)
{prelude}
from agegender.cli import main
sys.exit(main(sys.argv[1:]))
"""


def agegender_peak_rss(arguments, prelude="", timeout=300):
    """Peak resident memory (bytes) of `agegender ARGUMENTS` run in a child process, as a user runs it;
    `prelude`: Python run in the child first (e.g. a stand-in detector)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-c", _REPORT_PEAK.format(prelude=prelude)] + [str(a) for a in arguments],
                         cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         errors="replace", timeout=timeout)
    assert run.returncode == 0, run.stderr
    return int(run.stderr.rsplit("VmHWM:", 1)[1].split()[0]) * 1024          # /proc reports kB
