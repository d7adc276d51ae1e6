"""The closing summary of bench/arm64-check.sh, read from the files the run left (standard library only).

    python bench/arm64_summary.py --out DIR --cpu cortex-a57 --test-rc N --bench-rc N [...]
    python bench/arm64_summary.py --requirements setup.py     # what the arm64 venv installs

DIR holds junit.xml (pytest), bench.json (python -m bench --json), cpu.txt (the CPU features numpy saw),
install.log (pip install -v: the Cython build flags). Exit status 0 only when every selected test passed,
the benchmark exited 0, and both kernels backends (numba and cython) were built and verified against the
golden vectors in every row they ran; 1 otherwise.
"""
import argparse
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

KERNEL_BACKENDS = ("numba", "cython")


def read_junit(path):
    """-> dict(tests, passed, failed, errors, skipped, time, failures=[names], skips={reason: count})."""
    out = dict(tests=0, passed=0, failed=0, errors=0, skipped=0, time=0.0, failures=[], skips={})
    if not os.path.exists(path):
        return None
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        out["tests"] += 1
        out["time"] += float(case.get("time") or 0)
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            out["failed"] += 1
            out["failures"].append(name)
        elif case.find("error") is not None:
            out["errors"] += 1
            out["failures"].append(name + " (error)")
        elif case.find("skipped") is not None:
            out["skipped"] += 1
            reason = (case.find("skipped").get("message") or "").strip()
            reason = re.sub(r"^Skipped: ", "", reason)
            out["skips"][reason] = out["skips"].get(reason, 0) + 1
        else:
            out["passed"] += 1
    return out


def first_line(path, pattern):
    if not os.path.exists(path):
        return None
    with open(path, errors="replace") as f:
        found = [line.strip() for line in f if re.search(pattern, line)]
    return found[-1] if found else None


def backend_lines(bench):
    """-> (lines, {backend: 'verified' | why not})."""
    lines, state = [], {}
    for name, entry in bench.get("backends", {}).items():
        rows = [r for r in bench.get("results", []) if r["backend"] == name]
        if not entry.get("available"):
            state[name] = f"not available: {entry.get('why', '?')}"
            lines.append(f"  {name:<12} not built/available here: {(entry.get('why') or '?').splitlines()[0][:110]}")
            continue
        verdicts = sorted({r.get("verified") for r in rows})
        worst = max((max(v for v in r.get("max_abs_error", {}).values()) for r in rows
                     if r.get("max_abs_error")), default=None)
        if rows and verdicts == ["ok"]:
            state[name] = "verified"
            how = f"verified in all {len(rows)} rows (batch x threads), largest |error| {worst:.2e}" \
                if worst is not None else f"verified in all {len(rows)} rows"
        else:
            state[name] = f"verification: {', '.join(map(str, verdicts)) or 'no rows'}"
            how = f"NOT verified: {', '.join(map(str, verdicts)) or 'no rows ran'}"
        lines.append(f"  {name:<12} built, {how}; runs {entry.get('isa', '?')}")
    return lines, state


def requirements(setup_py):
    """install_requires + extras_require["test"] of setup.py, less the face detector: dlib-bin and
    face-recognition-models (a 93 MB model file to unpack under emulation, and the detector tests need the
    UTKFace folder named by AGEGENDER_UTKFACE, which the arm64 root does not have, so they skip anyway)."""
    import ast

    with open(setup_py) as f:
        tree = ast.parse(f.read())
    items = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in ("install_requires", "extras_require"):
            value = ast.literal_eval(node.value)
            items += value if isinstance(value, list) else value.get("test", [])
    return [i for i in items if not re.match(r"(dlib|face.recognition)", i)]


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--requirements"]:
        print("\n".join(requirements(argv[1])))
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--cpu", default="cortex-a57")
    p.add_argument("--rev", default="?")
    p.add_argument("--test-rc", type=int, required=True)
    p.add_argument("--bench-rc", type=int, required=True)
    p.add_argument("--elapsed", type=int, default=None)
    p.add_argument("--pytest-args", default="")
    p.add_argument("--profile", default="ci")
    a = p.parse_args(argv)

    ok = True
    lines = [f"arm64 check of agegender-kit {a.rev} under QEMU_CPU={a.cpu} (user-mode emulation, Debian arm64 root)"]
    cpu = first_line(os.path.join(a.out, "cpu.txt"), r"numpy sees")
    if cpu:
        lines.append(f"  CPU: {cpu}")
    flags = first_line(os.path.join(a.out, "install.log"), r"kernels: building the Cython backend with")
    lines.append(f"  Cython build: {flags.split('kernels: ', 1)[1] if flags else 'no build line in install.log'}")

    junit = read_junit(os.path.join(a.out, "junit.xml"))
    selection = a.pytest_args.strip() or "tests (the whole suite)"
    lines.append(f"Tests: python -m pytest {selection}, hypothesis profile {a.profile}")
    if junit is None:
        ok = False
        lines.append(f"  no junit.xml: pytest did not run to the end (exit status {a.test_rc})")
    else:
        lines.append(f"  {junit['passed']} passed, {junit['failed'] + junit['errors']} failed, "
                     f"{junit['skipped']} skipped (of {junit['tests']}; {junit['time']:.0f} s in tests)")
        for name in junit["failures"]:
            lines.append(f"  FAILED {name}")
        for reason, n in sorted(junit["skips"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  skipped {n:>3}: {reason[:140]}")
        if junit["failed"] or junit["errors"] or a.test_rc not in (0,):
            ok = False
        if a.pytest_args.strip():
            lines.append("  NOTE: a selection, not the whole suite (AGEGENDER_ARM64_PYTEST was set)")

    bench_path = os.path.join(a.out, "bench.json")
    lines.append("Backends (python -m bench, checked against weights/golden.npz):")
    if not os.path.exists(bench_path):
        ok = False
        lines.append(f"  no bench.json: the benchmark did not finish (exit status {a.bench_rc})")
        state = {}
    else:
        with open(bench_path) as f:
            bench = json.load(f)
        blines, state = backend_lines(bench)
        lines += blines
        if a.bench_rc != 0:
            ok = False
            lines.append(f"  the benchmark exited with status {a.bench_rc}")
    for name in KERNEL_BACKENDS:
        if state.get(name) != "verified":
            ok = False
            lines.append(f"  MISSING: the {name} backend was not built and verified ({state.get(name, 'absent')})")

    lines.append("Timings: every number above and in the benchmark's table was measured under QEMU's emulation of "
                 "the A57 on this PC.")
    lines.append("  They are NOT Jetson Nano timings (emulation is tens of times slower and not proportional per "
                 "backend); the run proves")
    lines.append("  the build and the answers, not the speed. Board timings: docs/jetson-nano.md.")
    if a.elapsed is not None:
        lines.append(f"Took {a.elapsed // 60} min {a.elapsed % 60} s.")
    both = " and ".join(KERNEL_BACKENDS)
    if ok and junit is not None:
        lines.append(f"GREEN: all {junit['passed']} selected tests that ran passed under {a.cpu} emulation "
                     f"({junit['skipped']} skipped, reasons above); {both} backends built and verified.")
    else:
        lines.append(f"RED: see the lines above (tests exit {a.test_rc}, benchmark exit {a.bench_rc}).")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
