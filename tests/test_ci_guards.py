"""Nothing passes by skipping or falling back: the `auto` backend's choice and its log, the CI guards of
tests/conftest.py (required kernel backends, tests that claim a kernel really run one, no unexpected skip),
each shown to fail on a deliberately broken variant run in a subprocess."""
import logging
import os
import re
import shutil
import subprocess
import sys

import pytest

import conftest
import refimpl
from agegender import Estimator, backends
from conftest import BUNDLED, ROOT


def run_pytest(args, cwd=ROOT, pythonpath=(), **env):
    """`python -m pytest -q -p no:cacheprovider *args` in a fresh interpreter -> (exit status, output)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in (conftest.REQUIRE_BACKENDS_ENV, conftest.NO_SKIP_ENV, "PYTEST_ADDOPTS")}
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    environ.update(env, COLUMNS="400")                  # the short summary keeps each failure's message whole
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def numba_blocked(tmp_path):
    """A folder that, first on PYTHONPATH, makes `import numba` fail as it does where numba is not installed."""
    (tmp_path / "numba").mkdir()
    (tmp_path / "numba" / "__init__.py").write_text('raise ImportError("numba blocked by the test")\n')
    return tmp_path


# --- `auto`: a kernel where one loads, a logged reason where it falls back, the caller's errors raised ---------

def test_auto_picks_a_kernel_backend_where_one_is_available():
    usable = backends.kernel_backends()
    assert set(conftest.required_backends()) <= set(usable)
    if not usable:
        pytest.skip("no kernels backend can run here, so `auto` rightly gives refimpl")
    model, name = backends.load(BUNDLED, "auto")
    assert name == usable[0] and name != backends.REFERENCE
    assert model.backend_name == name                     # a kernels.Model, not refimpl's
    assert Estimator(BUNDLED).backend == name


def test_auto_logs_each_backend_it_passes_over(monkeypatch, caplog):
    import kernels

    if not backends.kernel_backends():
        pytest.skip("no kernels backend can run here to fail")

    monkeypatch.setattr(kernels, "load", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("half-built")))
    with caplog.at_level(logging.WARNING, logger="agegender"):
        _, name = backends.load(BUNDLED, "auto")
    assert name == backends.REFERENCE
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == [f"backend auto: not using {b}: RuntimeError: half-built" for b in backends.kernel_backends()]


def test_auto_logs_why_a_backend_cannot_be_imported(monkeypatch, caplog):
    import kernels

    real = kernels.backend

    def cython_missing(name):
        if name == "cython":
            kernels._unavailable[name] = "the extension is not built (blocked by the test)"
            raise ImportError("blocked by the test")
        return real(name)

    monkeypatch.setattr(kernels, "backend", cython_missing)
    monkeypatch.setattr(kernels, "_unavailable", {})
    with caplog.at_level(logging.WARNING, logger="agegender"):
        _, name = backends.load(BUNDLED, "auto")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == ["backend auto: not using cython: the extension is not built (blocked by the test)"]
    assert name == ("numba" if "numba" in backends.kernel_backends() else backends.REFERENCE)


@pytest.mark.parametrize("backend", ["auto", conftest.backend_param("cython"), conftest.backend_param("numba")])
def test_a_bad_thread_count_is_raised_not_hidden(backend):
    """kernels refuse threads=0 with a ValueError: `auto` must not turn it into a quiet refimpl model, and an
    explicit backend must not call it a model file error (issue 13, item 12)."""
    if not backends.kernel_backends():
        pytest.skip("no kernels backend here: refimpl takes no thread count")
    with pytest.raises(ValueError, match="threads") as info:
        backends.load(BUNDLED, backend, threads=0)
    assert not isinstance(info.value, refimpl.ModelFileError), info.value
    assert "\n" not in str(info.value)


def test_a_bad_file_is_the_files_error_not_a_fallback(tmp_path, caplog):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with caplog.at_level(logging.WARNING, logger="agegender"), pytest.raises(refimpl.ModelFileError):
        backends.load(bad, "auto")
    assert not caplog.records


# --- required kernel backends --------------------------------------------------------------------------------

def suite(folder, **tests):
    """A test folder with a copy of tests/conftest.py and the given test files ({name: source})."""
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), folder / "conftest.py")
    for name, source in tests.items():
        (folder / f"{name}.py").write_text(source)
    return folder


KERNEL_PARAM_TEST = """import pytest

from conftest import backend_param


@pytest.mark.parametrize("name", [backend_param("cython"), backend_param("numba")])
def test_kernel(name):
    import kernels

    kernels.backend(name)
"""


def test_a_missing_required_backend_stops_the_session(tmp_path, numba_blocked):
    rc, out = run_pytest(["."], cwd=suite(tmp_path, test_k=KERNEL_PARAM_TEST), pythonpath=[numba_blocked],
                         AGEGENDER_REQUIRE_BACKENDS="cython,numba")
    assert rc == pytest.ExitCode.USAGE_ERROR, out
    assert re.search(r"ERROR: AGEGENDER_REQUIRE_BACKENDS=cython,numba but .*'numba' is unavailable.*blocked by "
                     r"the test", out), out


def test_a_missing_backend_is_a_skip_where_none_is_required(tmp_path, numba_blocked):
    rc, out = run_pytest(["-rs", "."], cwd=suite(tmp_path, test_k=KERNEL_PARAM_TEST), pythonpath=[numba_blocked])
    assert rc == 0, out
    assert re.search(r"SKIPPED \[1\] .*backend 'numba' is unavailable.*blocked by the test", out), out
    assert "1 passed, 1 skipped" in out, out


def test_backend_param_fails_a_required_backend_instead_of_skipping(monkeypatch):
    import kernels

    monkeypatch.setattr(kernels, "backend", lambda name: (_ for _ in ()).throw(ImportError(f"{name} blocked")))
    marks = lambda param: [m.name for m in param.marks]                      # noqa: E731
    monkeypatch.delenv(conftest.REQUIRE_BACKENDS_ENV, raising=False)
    assert marks(conftest.backend_param("numba")) == ["skip"]
    monkeypatch.setenv(conftest.REQUIRE_BACKENDS_ENV, "cython,numba")
    param = conftest.backend_param("numba")
    assert marks(param) == ["required_backend_missing"]

    class Item:
        def get_closest_marker(self, name):
            return param.marks[0] if name == "required_backend_missing" else None

    with pytest.raises(pytest.fail.Exception, match="required by AGEGENDER_REQUIRE_BACKENDS: numba blocked"):
        conftest.pytest_runtest_setup(Item())


def test_an_unknown_required_backend_name_is_an_error(monkeypatch):
    monkeypatch.setenv(conftest.REQUIRE_BACKENDS_ENV, "cython,tensorrt")
    with pytest.raises(pytest.UsageError, match="'tensorrt'"):
        conftest.missing_required_backends()


BROKEN_KERNELS_PLUGIN = """
import numpy as np

import kernels
import refimpl


def _broken(*args, **kwargs):
    raise RuntimeError("kernel build broken by the test")


class _QuickReference:
    # refimpl's real forward would take minutes in these tests; the check shown here looks only at the backend
    def forward(self, x):
        refimpl.check_input(x)
        return {name: np.full((len(x), 1), 0.5, np.float32) for name in refimpl.spec.OUTPUT_NAMES}


kernels.load = _broken
refimpl.load = lambda *args, **kwargs: _QuickReference()
"""


def test_tests_that_claim_a_kernel_fail_when_auto_falls_back(tmp_path):
    """kernels.load broken (as when a backend cannot build): the estimator tests that claim to exercise a
    kernel through `auto` must fail, not compare refimpl with refimpl."""
    (tmp_path / "kernels_broken.py").write_text(BROKEN_KERNELS_PLUGIN)
    claims = conftest.KERNEL_BACKEND_TESTS["test_estimator.py"]
    rc, out = run_pytest(["-p", "kernels_broken", "tests/test_estimator.py", "-k", " or ".join(claims)],
                         pythonpath=[tmp_path])
    assert rc == pytest.ExitCode.TESTS_FAILED, out
    for name in claims:
        assert re.search(rf"FAILED tests/test_estimator.py::{name} .*fell back to refimpl", out), out


def test_a_renamed_kernel_claim_test_is_an_error(tmp_path):
    """KERNEL_BACKEND_TESTS names tests of test_estimator.py: if one is renamed the check must not go quiet."""
    rc, out = run_pytest(["."], cwd=suite(tmp_path, test_estimator="def test_renamed():\n    pass\n"))
    assert rc == pytest.ExitCode.USAGE_ERROR, out
    assert "KERNEL_BACKEND_TESTS names test_auto_backend_agrees_with_the_reference" in out, out


# --- no unexpected skip under AGEGENDER_CI_NO_SKIP=1 ---------------------------------------------------------

@pytest.fixture
def suite_that_skips(tmp_path):
    """Tests that pass, skip in a test, skip a whole module and xfail, beside a copy of tests/conftest.py."""
    return suite(tmp_path,
                 test_some="import pytest\n\n\ndef test_runs():\n    pass\n\n\n"
                           "def test_needs_data():\n    pytest.skip('data set not found')\n\n\n"
                           "@pytest.mark.xfail(reason='known', strict=True)\ndef test_known_bug():\n    assert False\n",
                 test_optional="import pytest\n\npytest.importorskip('no_such_module_here')\n")


def test_an_unexpected_skip_fails_the_run_under_the_ci_flag(suite_that_skips):
    rc, out = run_pytest(["-rs", "."], cwd=suite_that_skips, AGEGENDER_CI_NO_SKIP="1")
    assert rc == pytest.ExitCode.TESTS_FAILED, out
    listed = out[out.index("unexpected skips"):]
    assert "test_some.py::test_needs_data: data set not found" in listed, out
    assert "test_optional.py: could not import 'no_such_module_here'" in listed, out
    assert "test_known_bug" not in listed                                     # an xfail is not a skip


def test_skips_pass_without_the_ci_flag(suite_that_skips):
    rc, out = run_pytest(["-rs", "."], cwd=suite_that_skips)
    assert rc == 0 and "unexpected skips" not in out, out
    assert "1 passed, 2 skipped, 1 xfailed" in out, out


def test_the_allow_list_admits_only_what_it_names(monkeypatch):
    skips = [("tests/test_a.py::test_x", "no GPU here"), ("tests/test_b.py::test_y", "UTKFace not found")]
    monkeypatch.setattr(conftest, "ALLOWED_CI_SKIPS", ((r"test_a\.py::", r"^no GPU"),))
    assert conftest.unexpected_skips(skips) == [skips[1]]


# --- CI runs README's command, with the guards on -----------------------------------------------------------

def test_ci_runs_the_readme_test_command_with_the_guards_on():
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    ci_command = re.search(r"^python3 -m pytest (.*)$", ci, re.M).group(1)
    readme_command = re.search(r'pip install -e "\.\[test,train\]" && python -m pytest ([^#\n]*?)\s*#', readme)
    assert readme_command and readme_command.group(1) == ci_command == "-q -rs tests"
    assert ci.rstrip().splitlines()[-1].startswith("python3 -m pytest"), "pytest's status must be the script's"
    assert "set -euo pipefail" in ci
    assert re.search(r"^export AGEGENDER_REQUIRE_BACKENDS=cython,numba$", ci, re.M)
    assert re.search(r"^export AGEGENDER_CI_NO_SKIP=1$", ci, re.M)
    torch, extras = ci.index("pip install -q torch==2.13.0"), ci.index('pip install -q -e ".[test,train]"')
    assert torch < extras, "the local CPU wheel of torch must be installed before the extras"
