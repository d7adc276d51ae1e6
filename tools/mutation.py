"""Mutation testing of refimpl/, agegender/ and kernels/plan.py with mutmut 3, outside CI.

Install the tool into the development venv only (CI does not need it):

    .venv/bin/pip install "mutmut>=3.8,<3.9"     # the same pin as setup.py's `mutation` extra

(the driver calls mutmut's internals -- its run loop, stats and configuration reader -- so the pin is
narrow; mutmut 3.8.1 is the version it was written against).

Commands (run from the repository root; see docs/testing.md for the results and how to read them):

    nice -n 19 .venv/bin/python tools/mutation.py run refimpl              # one group (or several)
    nice -n 19 .venv/bin/python tools/mutation.py run refimpl kernels.plan agegender
    nice -n 19 .venv/bin/python tools/mutation.py run --mutants NAME [NAME ...]   # these mutants only
    nice -n 19 .venv/bin/python tools/mutation.py run --survivors-of old.json     # rerun a run's survivors
    .venv/bin/python tools/mutation.py summary --json out.json [--markdown out.md] [--sample N]
    .venv/bin/python tools/mutation.py summary --baseline old.json --json new.json   # after rerunning survivors

`run` resumes: a mutant that already has a result in mutants/ is not run again unless it is named
(--mutants, --survivors-of) or --rerun is given. Delete mutants/ to start from scratch (do that after
the tests change: mutmut maps tests to functions once and only adds tests it has not seen).

How it targets tests. mutmut records, in one clean run of the selected tests (the union of every
group's test files below), which tests call which function, and runs only those tests against a
mutant of that function. This driver narrows that set further to the test files listed for the
function's group (TEST_FILES) minus the slow tests in EXCLUDE, so a refimpl mutant never runs a
numba compilation or a training test just because those call refimpl too. A mutant whose function no
selected test calls is reported as "no tests" (e.g. code reached only in a subprocess: `python -m`).

mutmut itself mutates a copy of the sources (and copies tests/, weights/) under mutants/ (git-ignored by a .gitignore the driver
writes there) and puts it first on sys.path; the driver also puts it on PYTHONPATH so that tests that
start `python -m agegender` or `python -m refimpl` run the mutated copy (such a subprocess still sees
the mutant: the active mutant's name travels in the environment variable MUTANT_UNDER_TEST).
Per-mutant timeout: TIMEOUT_MULTIPLIER x (the selected tests' clean duration + TIMEOUT_CONSTANT) x 2,
in CPU seconds (mutmut's formula), so a busy machine does not turn slow mutants into timeouts.
"""
import argparse
import ast
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Group -> (function-name prefix, test files that may run against its mutants). The files are the ones
# that import the group's modules directly (or through the estimator, for refimpl.preprocess etc.).
GROUPS = {
    "refimpl": ("refimpl.", ["tests/test_refimpl_ops.py", "tests/test_refimpl_model.py",
                             "tests/test_refimpl_errors.py", "tests/test_adversarial_model.py",
                             "tests/test_refimpl_picture.py"]),
    # the plan is executed by both compiled backends; the Cython one needs no JIT compilation
    "kernels.plan": ("kernels.plan.", ["tests/test_kernels_model.py"]),
    # test_scale_out.py is left out: each of its cluster tests starts Dask processes (seconds per mutant)
    "agegender": ("agegender.", ["tests/test_estimator.py", "tests/test_estimator_images.py",
                                 "tests/test_estimator_align.py", "tests/test_cli.py",
                                 "tests/test_adversarial_files.py", "tests/test_adversarial_images.py"]),
}
# Node-id substrings never run for mutants: numba JIT compilation (a fresh mutant process compiles
# again), which the Cython backend's copy of the same tests replaces for kernels.plan.
EXCLUDE = ["[numba", "-numba", "numba]"]

# mutmut's limit is 2 x TIMEOUT_MULTIPLIER x (tests' clean duration + TIMEOUT_CONSTANT) CPU seconds; the clean
# duration is wall time measured while the machine may be busy, never less than the CPU time, so 1.0 keeps
# at least a factor 2 over what the tests need.
TIMEOUT_MULTIPLIER = 1.0
TIMEOUT_CONSTANT = 5.0
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def mutmut_settings(groups):
    """The mutmut configuration (what [tool.mutmut] would say), built here so that no project file changes."""
    tests = sorted({f for g in groups for f in GROUPS[g][1]})
    return {
        "source_paths": ["refimpl", "agegender", "kernels"],
        "only_mutate": ["refimpl/*.py", "agegender/*.py", "kernels/plan.py"],
        "do_not_mutate": ["refimpl/__main__.py", "agegender/__main__.py"],
        # what the tests read besides the mutated packages: the weights, bench/ (tests/conftest.py imports
        # bench.bounds), training/ and experiments/ (the checkpoint tests run them), README.md (the golden contract
        # test) and docs/
        "also_copy": ["weights", "bench", "training", "experiments", "README.md", "docs"],
        # numba tests are left out even of the stats run: each would compile the JIT kernels again
        "pytest_add_cli_args_test_selection": tests + ["-k", "not numba"],
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:randomly"],
        "timeout_multiplier": TIMEOUT_MULTIPLIER,
        "timeout_constant": TIMEOUT_CONSTANT,
        "process_isolation": "forkserver",    # mutants fork from a process that ran no test: no caches leak
        "use_git_change_detection": False,
        "debug": bool(os.environ.get("MUTATION_DEBUG")),   # pytest output of every run, for a failing setup
    }


SITECUSTOMIZE = '''"""Written by tools/mutation.py: mutmut's configuration for subprocesses of the tests."""
import json
import os

if os.environ.get("MUTATION_SETTINGS"):
    from mutmut import configuration

    _settings = json.loads(os.environ["MUTATION_SETTINGS"])
    configuration._config_reader = lambda: (lambda key, default: _settings.get(key, default))
    configuration.reset_config()
'''


def group_of(name):
    for group, (prefix, _) in GROUPS.items():
        if name.startswith(prefix):
            return group
    return None


def allowed_test(group, test_id):
    files = GROUPS[group][1]
    return any(test_id.startswith(f + "::") or test_id == f for f in files) and not any(x in test_id for x in EXCLUDE)


def import_mutmut(settings):
    """mutmut.__main__, configured by SETTINGS (mutmut reads its configuration when it is imported)."""
    from mutmut import configuration

    configuration._config_reader = lambda: (lambda key, default: settings.get(key, default))
    configuration.reset_config()
    import mutmut.__main__ as mm
    return mm


def in_sample(mutants, every):
    """Every EVERY-th mutant of each group, in a fixed order (file, function, number): a uniform sample."""
    if every in (None, 1, {}):
        return mutants
    kept, seen = [], {}
    for m in sorted(mutants, key=lambda m: _natural(m[1])):
        group = group_of(m[1])
        index = seen[group] = seen.get(group, -1) + 1
        if index % (every.get(group, 1) if isinstance(every, dict) else every) == 0:
            kept.append(m)
    return kept


def install_hooks(mm, resume, every=1):
    """Narrow mutmut's test selection per group (see the module docstring); with RESUME skip finished mutants;
    run only every EVERY-th mutant of each group (in_sample)."""
    from mutmut.state import state

    original_stats = mm.collect_or_load_stats

    def collect_and_narrow(*args, **kwargs):
        original_stats(*args, **kwargs)
        table = state().tests_by_mangled_function_name
        for function, tests in table.items():
            group = group_of(function)
            table[function] = {t for t in tests if group and allowed_test(group, t)}

    mm.collect_or_load_stats = collect_and_narrow

    original_collect = mm.collect_source_file_mutation_data

    def collect_unfinished(*, mutant_names):
        mutants, by_path = original_collect(mutant_names=mutant_names)
        mutants = in_sample(mutants, every)
        if resume:
            mutants = [m for m in mutants if m[2] is None]
        if not mutants:
            raise SystemExit("mutation: every selected mutant already has a result (use --rerun to run them again)")
        print(f"mutation: {len(mutants)} mutants to run", flush=True)
        return mutants, by_path

    mm.collect_source_file_mutation_data = collect_unfinished


def cmd_run(args):
    os.chdir(ROOT)
    Path("mutants").mkdir(exist_ok=True)
    (Path("mutants") / ".gitignore").write_text("*\n")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "mutants"), os.environ.get("PYTHONPATH")]))
    # as in an activated venv: a test's `agegender` console script must be this venv's, which can import mutmut
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    # a subprocess imports mutated code, whose trampolines read mutmut's configuration: hand it ours
    settings = mutmut_settings(list(GROUPS))
    os.environ["MUTATION_SETTINGS"] = json.dumps(settings)
    (Path("mutants") / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # the tests that need a data set read it from AGEGENDER_UTKFACE / AGEGENDER_AAF, which the copy inherits

    if args.survivors_of:
        rows = json.loads(Path(args.survivors_of).read_text())
        names = [r["mutant"] for r in rows if r["status"] not in KILLED | {"not checked"}]
        groups = sorted({r["group"] for r in rows if r["mutant"] in names})
        resume = False
    elif args.mutants:
        names, resume = list(args.mutants), False
        groups = sorted({group_of(n) for n in names} - {None})
    else:
        groups = args.groups or list(GROUPS)
        names = [GROUPS[g][0] + "*" for g in groups]
        resume = not args.rerun
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise SystemExit(f"mutation: unknown or no group {unknown}; expected some of {list(GROUPS)}")
    if not names:
        raise SystemExit("mutation: no mutant to run")
    # the test selection is always the union of all groups, so that switching groups keeps mutmut's stats
    mm = import_mutmut(settings)
    install_hooks(mm, resume, args.sample)
    print(f"mutation: groups {groups}, {len(names)} name patterns, max children {args.max_children}", flush=True)
    mm._run(names, max_children=args.max_children)


def first_changed_line(path, mutant, diff):
    """Line number in PATH of the first line the mutant changes (found within the mutated function)."""
    func = function_of(mutant).rpartition(".")[2]
    source = Path(path).read_text()
    lines = source.splitlines()
    span = (1, len(lines))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == func:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            span = (start, node.end_lineno)
            break
    removed = [l[1:].strip() for l in diff.splitlines() if l.startswith("-") and not l.startswith("---")]
    for text in removed:
        for number in range(span[0], span[1] + 1):
            if lines[number - 1].strip() == text:
                return number
    hunk = re.search(r"^@@ -(\d+)", diff, re.M)
    return span[0] + int(hunk.group(1)) - 1 if hunk else span[0]


def collect_results():
    os.chdir(ROOT)
    mm = import_mutmut(mutmut_settings(list(GROUPS)))
    import libcst as cst
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code

    rows = []
    for path in mm.walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        module = None
        for mutant, code in sorted(data.exit_code_by_key.items(), key=lambda kv: _natural(kv[0])):
            row = {"group": group_of(mutant), "module": str(path), "mutant": mutant,
                   "status": status_by_exit_code[code], "exit_code": code, "line": None, "diff": None}
            if code is not None:            # diffs of the mutants that ran only: one costs a parse of the file
                module = module or cst.parse_module((Path("mutants") / path).read_text())
                try:
                    row["diff"] = mutant_diff(module, mutant, path)
                except Exception as exc:  # a mutant whose source is gone (file edited since)
                    row["diff"] = f"(no diff: {exc})"
                row["line"] = first_changed_line(path, mutant, row["diff"])
            rows.append(row)
    return rows


def mutant_diff(module, mutant, path):
    """The unified diff of MUTANT's function against the original, as `mutmut show` prints it."""
    from difflib import unified_diff

    import libcst as cst
    from mutmut.mutation.diff_apply import read_mutant_function, read_original_function

    old, new = (cst.Module([f]).code.strip().split("\n")
                for f in (read_original_function(module, mutant), read_mutant_function(module, mutant)))
    return "\n".join(unified_diff(old, new, fromfile=str(path), tofile=str(path), lineterm=""))


def _natural(name):
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


def mutation_text(diff):
    """`old -> new` for the first changed line pair of a diff, for a table cell."""
    removed = [l[1:].strip() for l in diff.splitlines() if l.startswith("-") and not l.startswith("---")]
    added = [l[1:].strip() for l in diff.splitlines() if l.startswith("+") and not l.startswith("+++")]
    old = removed[0] if removed else ""
    new = added[0] if added else "(removed)"
    return f"`{old}` -> `{new}`".replace("|", "\\|")


def markdown(rows, every=1):
    """The per-module counts (over the EVERY-th-mutant sample when EVERY > 1) and every survivor that ran."""
    sampled = {m[1] for m in in_sample([(None, r["mutant"], None) for r in rows], every)} if every != 1 else None
    if isinstance(every, dict):
        scope = "the samples " + ", ".join(f"1-in-{n} of {g}" for g, n in every.items())
    else:
        scope = f"mutants in the 1-in-{every} sample" if sampled else "all mutants"
    out = [f"Counts over {scope}; kill rate = killed / (killed + survived + no tests + other).", "",
           "| group | module | mutants | killed | survived | no tests | other | not run | kill rate |",
           "|---|---|---|---|---|---|---|---|---|"]
    by_module = {}
    for r in rows:
        if sampled is None or r["mutant"] in sampled:
            by_module.setdefault((r["group"], r["module"]), []).append(r["status"])
    totals = {}
    for (group, module), statuses in sorted(by_module.items()):
        killed = sum(s in KILLED for s in statuses)
        survived = statuses.count("survived")
        no_tests = statuses.count("no tests")
        not_run = statuses.count("not checked")
        other = len(statuses) - killed - survived - no_tests - not_run
        run = len(statuses) - not_run
        rate = f"{100 * killed / run:.0f}%" if run else "-"
        out.append(f"| {group} | {module} | {len(statuses)} | {killed} | {survived} | {no_tests} | {other} | {not_run}"
                   f" | {rate} |")
        total = totals.setdefault(group, [0] * 6)
        for i, n in enumerate((len(statuses), killed, survived, no_tests, other, not_run)):
            total[i] += n
    for group, (n, killed, survived, no_tests, other, not_run) in totals.items():
        run = n - not_run
        rate = f"{100 * killed / run:.0f}%" if run else "-"
        out.append(f"| **{group}** | all | {n} | {killed} | {survived} | {no_tests} | {other} | {not_run} | **{rate}** |")
    out += ["", "Survivors (every one that ran; `mutant` is the name `run --mutants` takes after the module's dotted path):",
            "", "| module | line | mutant | status | in sample | mutation | killed by / why equivalent |",
            "|---|---|---|---|---|---|---|"]
    untested = {}
    for r in rows:
        if r["status"] == "no tests":
            untested.setdefault((r["module"], function_of(r["mutant"])), []).append(r)
        elif r["status"] not in KILLED and r["status"] != "not checked":
            short = r["mutant"].rpartition(".")[2]
            in_it = "yes" if sampled is None or r["mutant"] in sampled else "no"
            out.append(f"| {r['module']} | {r['line']} | {short} | {r['status']} | {in_it} | {mutation_text(r['diff'])} | |")
    out += ["", "Mutants no selected test reaches, by function (\"at import\": the module calls the function while "
            "it is imported, before mutmut can switch a mutant on, so mutmut cannot test it):", "",
            "| module | function | mutants | lines | why no test |", "|---|---|---|---|---|"]
    for (module, function), group in sorted(untested.items()):
        lines = sorted({r["line"] for r in group if r["line"]})
        why = "at import" if function in called_at_import(module) else ""
        out.append(f"| {module} | {function} | {len(group)} | {lines[0]}-{lines[-1]} | {why} |" if lines else
                   f"| {module} | {function} | {len(group)} | | {why} |")
    return "\n".join(out) + "\n"


def function_of(mutant):
    """`Class.method` or `function` from a mutant name (mutmut writes xǁClassǁmethod__mutmut_3 / x_function__mutmut_3)."""
    mangled = mutant.rpartition(".")[2].partition("__mutmut_")[0]
    if mangled.startswith("xǁ"):
        return ".".join(part for part in mangled[2:].split("ǁ") if part)
    return mangled[2:] if mangled.startswith("x_") else mangled


def called_at_import(module):
    """Names of functions MODULE calls while it is imported: from module level, and what those call in turn."""
    tree = ast.parse(Path(ROOT / module).read_text())
    bodies = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def calls(node, top):
        if not top and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return set()
        found = set()
        if isinstance(node, ast.Call):
            f = node.func
            found.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None)
        for child in ast.iter_child_nodes(node):
            found |= calls(child, False)
        return found

    names, todo = set(), calls_at_module_level(tree, calls)
    while todo:
        name = todo.pop()
        if name not in names:
            names.add(name)
            if name in bodies:
                todo |= calls(bodies[name], True)
    return names


def calls_at_module_level(tree, calls):
    found = set()
    for statement in tree.body:
        if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found |= calls(statement, False)
        else:   # decorators and default values run at import
            for node in statement.decorator_list + statement.args.defaults + statement.args.kw_defaults:
                if node is not None:
                    found |= calls(node, False)
    return found


def sample_spec(text):
    """`10` or `refimpl=10,agegender=20` (a group not named: every mutant)."""
    if "=" not in text:
        return int(text)
    return {group: int(n) for group, _, n in (part.partition("=") for part in text.split(","))}


def cmd_summary(args):
    rows = collect_results()
    if args.baseline:
        # mutants not run this time keep the baseline's result: after `rm -rf mutants; run --survivors-of
        # before.json`, the counts are those of the whole earlier run with its survivors re-judged
        before = {r["mutant"]: r for r in json.loads(Path(args.baseline).read_text())}
        known = {r["mutant"] for r in rows}
        for i, r in enumerate(rows):
            if r["status"] == "not checked" and before.get(r["mutant"], {}).get("status", "not checked") != "not checked":
                rows[i] = dict(before[r["mutant"]], from_baseline=True)
        rows += [dict(r, from_baseline=True) for name, r in before.items() if name not in known]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    text = markdown(rows, args.sample)
    if args.markdown:
        Path(args.markdown).write_text(text)
    else:
        print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run mutants (resumes where a previous run stopped)")
    run.add_argument("groups", nargs="*", help=f"some of {list(GROUPS)} (default: all)")
    run.add_argument("--mutants", nargs="+", help="run exactly these mutant names (shell patterns allowed)")
    run.add_argument("--survivors-of", help="a summary --json file: rerun every mutant it does not count as killed")
    run.add_argument("--rerun", action="store_true", help="run mutants that already have a result again")
    run.add_argument("--sample", type=sample_spec, default=1, metavar="N|GROUP=N,...",
                     help="only every N-th mutant of each group, in name order (a uniform sample; default: all)")
    run.add_argument("--max-children", type=int, default=1, help="parallel mutants (default 1)")
    run.set_defaults(func=cmd_run)
    summary = sub.add_parser("summary", help="results of mutants/ as JSON rows and Markdown tables")
    summary.add_argument("--json", help="write one row per mutant: group, module, mutant, status, line, diff")
    summary.add_argument("--markdown", help="write the per-module table and the survivors table here")
    summary.add_argument("--baseline", help="an earlier summary --json: its results stand for mutants not run now")
    summary.add_argument("--sample", type=sample_spec, default=1, metavar="N|GROUP=N,...",
                         help="count only the 1-in-N sample that `run --sample N` ran, one N or one per group "
                              "(e.g. refimpl=10,kernels.plan=10,agegender=20); survivors: all that ran")
    summary.set_defaults(func=cmd_summary)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
