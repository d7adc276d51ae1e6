"""Packaging facts that hold the kit on old and foreign machines (the Jetson Nano's aarch64 among them).

- The oldest supported Python is OLDEST_PYTHON: setup.py's python_requires says it, and every source file
  must parse and define its functions there. JetPack 4.x ships Python 3.6, too old (see
  docs/jetson-nano.md, "Python on JetPack and the emulated check", for the route on the board).
- A portable build never uses the build machine's -march/-mcpu=native (a wheel built on a PC must run on
  the board); bench/arm64-check.sh builds with the board's own flags and says which in its summary.
"""
import ast
import glob
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLDEST_PYTHON = (3, 9)
PACKAGES = ("refimpl", "kernels", "bench", "agegender", "training", "experiments", "tools", "tests", "weights")


def sources():
    files = [os.path.join(ROOT, "setup.py")]
    for package in PACKAGES:
        files += glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True)
    return sorted(f for f in files if "__pycache__" not in f)


def setup_keyword(name):
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name}=")


def test_python_requires_names_the_oldest_supported_python():
    assert setup_keyword("python_requires") == ">={}.{}".format(*OLDEST_PYTHON)
    assert sys.version_info[:2] >= OLDEST_PYTHON


def test_sources_parse_as_the_oldest_python():
    """ast's feature_version rejects grammar newer than 3.9 (match, except*, parenthesised with-items, ...), and
    annotations that 3.9 evaluates at def time must not use `X | Y` (a TypeError there) unless postponed."""
    problems = []
    for path in sources():
        problems += [f"{os.path.relpath(path, ROOT)}: {p}" for p in oldest_python_problems(path)]
    assert not problems, "\n".join(problems)


def oldest_python_problems(path):
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source, filename=path, feature_version=OLDEST_PYTHON)
    postponed = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                    any(a.name == "annotations" for a in n.names) for n in tree.body)
    problems = []
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            annotations += [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs if a.annotation]
            annotations += [a.annotation for a in (args.vararg, args.kwarg) if a is not None and a.annotation]
            annotations += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for ann in annotations:
            if not postponed and any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(ann)):
                problems.append(f"line {ann.lineno}: `X | Y` annotation is evaluated on Python 3.9")
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            words = {k.arg for k in node.keywords}
            if name == "zip" and "strict" in words:
                problems.append(f"line {node.lineno}: zip(strict=) is Python 3.10+")
            if name == "dataclass" and words & {"slots", "kw_only", "match_args"}:
                problems.append(f"line {node.lineno}: dataclass({', '.join(words)}) is Python 3.10+")
    return problems


def oldest_interpreter():
    """An interpreter of exactly OLDEST_PYTHON, if this machine has one (pyenv's, or one on PATH)."""
    version = "{}.{}".format(*OLDEST_PYTHON)
    candidates = [os.environ.get("AGEGENDER_OLDEST_PYTHON", "")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}")))
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for exe in candidates:
        if exe and os.path.exists(exe):
            try:
                out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2] == (%d, %d))" % OLDEST_PYTHON],
                                     capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.stdout.strip() == "True":
                return exe
    return None


def test_the_oldest_python_itself_compiles_every_source():
    """The real 3.9 parser, where this machine has a 3.9 (CI's pyenv does; the arm64 root does not)."""
    exe = oldest_interpreter()
    if exe is None:
        pytest.skip("no Python {}.{} interpreter here (set AGEGENDER_OLDEST_PYTHON)".format(*OLDEST_PYTHON))
    code = textwrap.dedent("""
        import sys
        bad = []
        for path in sys.argv[1:]:
            try:
                compile(open(path, encoding="utf-8").read(), path, "exec", dont_inherit=True)
            except SyntaxError as exc:
                bad.append(f"{path}:{exc.lineno}: {exc.msg}")
        print("\\n".join(bad))
        sys.exit(1 if bad else 0)
    """)
    result = subprocess.run([exe, "-c", code] + sources(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_portable_build_flags_never_target_the_build_machine(monkeypatch):
    """pip install . anywhere: no -march=native / -mcpu=native unless AGEGENDER_NATIVE=1 asks for it."""
    sys.path.insert(0, os.path.join(ROOT, "kernels"))
    try:
        import build_flags
    finally:
        sys.path.pop(0)
    for name in ("AGEGENDER_NATIVE", "AGEGENDER_CFLAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGEGENDER_NO_OPENMP", "1")            # no compiler probe needed for this
    cflags, _ = build_flags.compile_flags()
    assert not [f for f in cflags if "native" in f or f.startswith(("-march", "-mcpu", "-mtune"))], cflags
    monkeypatch.setenv("AGEGENDER_CFLAGS", "-mcpu=cortex-a57")  # what bench/arm64-check.sh builds the board with
    cflags, _ = build_flags.compile_flags()
    assert cflags[-1] == "-mcpu=cortex-a57" and not [f for f in cflags if "native" in f]


def test_arm64_check_builds_with_the_boards_flags_and_parses():
    script = os.path.join(ROOT, "bench", "arm64-check.sh")
    with open(script) as f:
        text = f.read()
    assert "AGEGENDER_CFLAGS=-mcpu=$CPU" in text and "CPU=cortex-a57" in text
    assert "native" not in text.replace("never -march/-mcpu=native", "")
    result = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _summary(tmp_path, junit_cases, backends, results, test_rc=0, bench_rc=0):
    cases = "".join(f'<testcase classname="t" name="n{i}" time="0.1">{body}</testcase>'
                    for i, body in enumerate(junit_cases))
    (tmp_path / "junit.xml").write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    import json
    (tmp_path / "bench.json").write_text(json.dumps({"backends": backends, "results": results}))
    (tmp_path / "install.log").write_text("kernels: building the Cython backend with -O3 -mcpu=cortex-a57\n")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "arm64_summary.py"), "--out", str(tmp_path),
                             "--test-rc", str(test_rc), "--bench-rc", str(bench_rc)],
                            capture_output=True, text=True)
    return result.returncode, result.stdout


def test_arm64_summary_is_green_only_with_every_test_and_both_kernel_backends(tmp_path):
    ok_backend = {"available": True, "isa": "LLVM"}
    rows = [{"backend": b, "verified": "ok", "max_abs_error": {"age": 1e-5}} for b in ("numba", "cython")]
    rc, out = _summary(tmp_path, ["", '<skipped message="no torch"/>'],
                       {"numba": ok_backend, "cython": ok_backend}, rows)
    assert rc == 0 and "GREEN" in out and "1 passed, 0 failed, 1 skipped" in out and "NOT Jetson Nano timings" in out
    assert "-mcpu=cortex-a57" in out

    rc, out = _summary(tmp_path, ["", '<failure message="x"/>'], {"numba": ok_backend, "cython": ok_backend}, rows,
                       test_rc=1)
    assert rc == 1 and "RED" in out and "FAILED t::n1" in out

    rc, out = _summary(tmp_path, [""], {"numba": ok_backend, "cython": {"available": False, "why": "not built"}},
                       rows[:1])
    assert rc == 1 and "MISSING: the cython backend" in out

    bad = [dict(rows[0]), dict(rows[1], verified="FAILED")]
    rc, out = _summary(tmp_path, [""], {"numba": ok_backend, "cython": ok_backend}, bad)
    assert rc == 1 and "NOT verified" in out
