"""agegender-kit: install with `pip install -e .` (add `[test]`, `[train]` as needed).

Runtime needs numpy and onnx only. The Cython backend of kernels/ is compiled here
when a C compiler and Cython are present; without them the package still installs
and kernels.available_backends() says the Cython backend is unavailable.
"""
import os
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class OptionalBuildExt(build_ext):
    """Build the Cython extension if possible; otherwise warn and install without it."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no Cython, ...
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        sys.stderr.write(f"WARNING: the Cython backend was not built ({exc}); kernels will offer numba only\n")


def cython_extensions():
    sys.path.insert(0, os.path.join(HERE, "kernels"))
    try:
        from build_flags import cython_extensions as make  # kernels/build_flags.py: compiler flags in one place
    except ImportError:
        return []
    finally:
        sys.path.pop(0)
    try:
        return make()
    except Exception as exc:  # e.g. Cython missing
        sys.stderr.write(f"WARNING: Cython extension not configured ({exc})\n")
        return []


setup(
    name="agegender-kit",
    version="0.1.0",
    description="Light-weight multi-task age/gender CNN: NumPy reference, Numba/Cython kernels, benchmark kit",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["refimpl", "kernels", "bench", "training", "agegender", "agegender.*"])
    + ["agegender_weights"],
    # weights/ installs as the package agegender_weights, so a regular (non-editable) install has the model
    package_dir={"agegender_weights": "weights"},
    package_data={"kernels": ["*.pyx", "*.pxd", "*.h"], "agegender_weights": ["*.onnx", "*.npz", "*.md", "*.json"],
                  "bench": ["samples/*"]},
    # onnx 1.16: the loader runs onnx.checker on every file it reads, and 1.16.0 is the first release with the
    # checker's out-of-bounds read fixed (CVE-2024-27319) and external data confined to the model's folder
    # (CVE-2024-27318; refimpl never follows external data, but other tools of the kit's users may)
    install_requires=["numpy>=1.22", "onnx>=1.16"],
    extras_require={
        "numba": ["numba>=0.57"],
        "test": ["pytest>=7", "pytest-benchmark>=4", "hypothesis>=6.80", "onnxruntime>=1.16", "scipy>=1.9",
                 "numba>=0.57", "pillow>=9", "threadpoolctl>=3", "dlib-bin>=20.0.1", "face-recognition-models>=0.3.0",
                 "matplotlib>=3.5", "ruff>=0.4", "dask[distributed]>=2024.1", "pyarrow>=14", "pandas>=1.5",
                 # the ncnn peer's conversion (pnnx traces the PyTorch module of [train]) is the kit's own code:
                 # tests/test_bench_peers.py runs it (~15 s, ~110 MB installed). openvino (~180 MB) stays out:
                 # its peer is configuration only, checked by python -m bench --peers where installed
                 "ncnn>=1.0.20261020", "pnnx>=20261020"],
        # face detection for `agegender predict` on photos: dlib's HOG detector (dlib-bin, a prebuilt wheel)
        # and its 5-landmark model (face-recognition-models); both ship their models, nothing is downloaded
        "detect": ["pillow>=9", "dlib-bin>=20.0.1", "face-recognition-models>=0.3.0"],
        # the benchmark kit with every CPU backend it can compare: numba and ONNX Runtime beside the reference
        "bench": ["numba>=0.57", "onnxruntime>=1.16", "threadpoolctl>=3", "pytest-benchmark>=4"],
        # any torch from 2.2 on; PyPI's default Linux wheel is a CUDA build of several GB, so for a small install
        # take the CPU-only wheel first (README: pip install torch --index-url https://download.pytorch.org/whl/cpu)
        "train": ["torch>=2.2", "pillow>=9", "tqdm>=4"],
        # the peers of python -m bench --peers (bench/peers, docs/peers.md); floors are the versions tested, older
        # ones may work; LiteRT is left out (its rows need a .tflite made in a separate environment anyway). torch:
        # the train extra's range; install the CPU wheel first (see train) so that pip adds no CUDA libraries.
        # Literals only: bench/arm64_summary.py reads this with ast.
        "peers": ["openvino>=2026.4.1", "ncnn>=1.0.20261020", "pnnx>=20261020", "torch>=2.2"],
        "image": ["pillow>=9"],
        # `agegender predict --parquet OUT` (pyarrow) and its --workers / --scheduler runs on Dask; also the
        # distributed folds of `python -m training folds` (docs/scale-out.md)
        "scale": ["dask[distributed]>=2024.1", "pyarrow>=14"],
        "distributed": ["dask[distributed]>=2024.1", "pyarrow>=14"],      # the same, by the name issue 15 gave it
        "plot": ["matplotlib>=3.5"],
        # mutation testing (tools/mutation.py drives mutmut's internals, hence the narrow pin; docs/testing.md):
        # a developer tool, never installed by CI
        "mutation": ["mutmut>=3.8,<3.9"],
    },
    setup_requires=[],
    ext_modules=cython_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    entry_points={"console_scripts": ["agegender = agegender.cli:main"]},
)
