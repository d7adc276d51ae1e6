"""Turning a run's result dict into text, JSON, a comparison of two runs, and a plot."""
import json

import numpy as np

from . import backends as bk
from . import peers
from .peers import summary as peer_summary
from .run import NANO, REALTIME_FPS

ORDER = bk.ALL_BACKENDS + peers.PEERS     # table order: the kit's backends, then the peers (--peers)

OTHERS_BUSY_LIMIT = 0.10          # other processes using more than 10% of all cores disturb a benchmark
CPU_SHARE_LIMIT = 0.90            # ... unless this process still got 90% of a core while timing
RERUN_WITHOUT_BLAS_ENV = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench"


def _f(value, fmt, none="-"):
    return none if value is None else format(value, fmt)


def _ms(value):
    """Milliseconds with three significant digits at any scale."""
    if value is None:
        return "-"
    for limit, digits in ((100, 0), (10, 1), (1, 2)):
        if value >= limit:
            return f"{value:.{digits}f}"
    return f"{value:.3f}"


def _threads(row):
    return "gpu" if row.get("threads") is None else str(row["threads"])


def header(result):
    m, peak, model = result["machine"], result["peak"], result["model"]
    pk = m["packages"]
    lines = [f"agegender-kit benchmark, {result['created']} ({result['command']})",
             f"CPU       {m['cpu']} ({m['arch']}), {m['cores']} usable of {m['cores_total']} cores, "
             f"SIMD: {' '.join(m['simd']) or 'none reported'}"]
    load, end, others = m.get("load_average"), m.get("load_average_end"), m.get("others_busy")
    got = [r["cpu_per_wall"] for r in result["results"] if r.get("threads") == 1 and r.get("cpu_per_wall")]
    got = float(np.median(got)) if got else None
    # disturbed: this process got less than 90% of a core while timing one-thread rows (niced background work
    # that yields to us does not count), or, without such rows, others kept more than 10% of the cores busy
    disturbed = got < CPU_SHARE_LIMIT if got is not None else (others or 0) > OTHERS_BUSY_LIMIT
    parts = []
    if others is not None:
        parts.append(f"other processes kept {100 * others:.0f}% of this machine's {m['cores_total']} cores busy")
    if got is not None:
        parts.append(f"this process got {got:.2f} CPU seconds per second while timing one-thread rows (1.00 = a core "
                     f"to itself)")
    if parts:
        lines.append("Load      " + "; ".join(parts) + (
            ": TIMINGS ARE DISTURBED (noisy and slow; ratios less so, the backends are timed interleaved). Rerun on "
            "a quiet machine." if disturbed else ": undisturbed"))
    if load:
        ended = f", {end[0]:.2f} at the end" if end else ""
        lines.append(f"          load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min) at the start"
                     f"{ended}")
    names = ["numpy", "onnxruntime", "numba", "Cython", "threadpoolctl", "tensorrt", "onnx"]
    lines.append("Packages  python " + pk["python"] + ", " +
                 ", ".join(f"{n} {pk.get(n) or 'absent'}" for n in names))
    blas = m.get("blas", {})
    blas_text = (f"{blas.get('internal_api')} {blas.get('version')}, kernel {blas.get('architecture')}"
                 if "internal_api" in blas else blas.get("note", "unknown"))
    lines.append(f"BLAS      {blas_text}; " + (", ".join(f"{k}={v}" for k, v in m["blas_env"].items())
                                                if m["blas_env"] else "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"))
    controlled = "" if peak["threads_controlled"] else " (threads uncontrolled: threadpoolctl missing)"
    lines.append(f"Peak      {peak['gflops']:.1f} GFLOP/s on one core{controlled}: {peak['n']}^3 float32 matrix "
                 f"product through numpy, best of {peak['repeat']}; %peak below is measured against it")
    if peak.get("gflops_wall") and peak["gflops_wall"] < 0.9 * peak["gflops"]:
        lines.append(f"          (by the CPU time this process got; the wall clock gave {peak['gflops_wall']:.1f}: "
                     f"the core was shared while measuring)")
    if m["blas_env"]:
        lines.append(f"          MEASURED UNDER {' '.join(f'{k}={v}' for k, v in m['blas_env'].items())}, which "
                     f"override OpenBLAS's CPU detection (kernel here: {blas.get('architecture', 'unknown')}): the peak and the "
                     f"reference may be lower than this CPU can do."
                     f"\n          For the real peak run: {RERUN_WITHOUT_BLAS_ENV}")
    lines.append(f"Model     {model['path']} (sha256 {model['sha256'][:12]}), {model['flops_per_image'] / 1e6:.1f} "
                 f"MFLOP per image (a multiply-add counts 2)")
    lines.append(f"Checked   {result['verification']['note']}")
    return lines


def verification_lines(result):
    tol = result["verification"]["tolerances"]
    lines = [f"Verification: each backend, at each batch and thread count, before it is timed; the call doubles as "
             f"warm-up. Tolerances |d age| <= {tol['age']:g} years, |d gender| <= {tol['gender']:g} (TensorRT FP16 and "
             f"peers that are not fp32-equivalent: looser, see bench/tensorrt_backend.py, bench/peers/tolerances.py)."]
    by_backend = {}
    for row in result["results"]:
        by_backend.setdefault(row["backend"], []).append(row)
    for name, entry in result["backends"].items():
        label = f"  {entry['label']:<18}"
        if entry.get("available") is False:
            lines.append(f"{label}not available: {entry['why']}")
            continue
        rows = by_backend.get(name, [])
        failed = [r for r in rows if r["verified"] == "FAILED"]
        unverified = [r for r in rows if r["verified"] == "unverified"]
        errors = [r["max_abs_error"] for r in rows if r.get("max_abs_error")]
        worst_age = max((max(v for k, v in e.items() if k.startswith("age")) for e in errors), default=None)
        worst_gender = max((max(v for k, v in e.items() if k.startswith("gender")) for e in errors), default=None)
        status = ("FAILED" if failed else "UNVERIFIED" if unverified else "ok") + f" ({len(rows)} checks)"
        extra = f"   {entry['isa']}" if entry.get("isa") else ""
        lines.append(f"{label}{status:<16} max |d age| {_f(worst_age, '.2g')}, max |d gender| "
                     f"{_f(worst_gender, '.2g')}{extra}")
        for r in failed[:3]:
            lines.append(f"      batch {r['batch']}, {_threads(r)} thread(s): " + "; ".join(r["mismatches"][:2]))
    return lines


COLUMNS = (("backend", 18, "<"), ("thr", 4, ">"), ("batch", 6, ">"), ("ms/img", 8, ">"), ("p90", 8, ">"),
           ("img/s", 8, ">"), ("GFLOP/s", 8, ">"), ("%peak", 6, ">"), ("vs ORT", 7, ">"), ("n", 6, ">"),
           ("real time?", 12, ">"))


def _line(values):
    return " ".join(f"{v:{align}{width}}" for v, (_, width, align) in zip(values, COLUMNS)).rstrip()


def table_lines(result):
    lines = [_line([c[0] for c in COLUMNS])]
    rows = sorted(result["results"], key=lambda r: (r["threads"] is None, r["threads"] or 0,
                                                      ORDER.index(r["backend"]) if r["backend"] in ORDER else 99,
                                                      r["batch"]))
    last_threads = object()
    for r in rows:
        if r["threads"] != last_threads and len(lines) > 1:
            lines.append("")
        last_threads = r["threads"]
        if r["verified"] == "FAILED":
            timing = any(m.startswith("while timing") for m in r.get("mismatches") or [])
            lines.append(_line([r["label"], _threads(r), r["batch"]]) +
                         ("   FAILED while timing (see Verification)" if timing else "   FAILED verification: not timed"))
            continue
        ratio = r.get("ratio_to_ort")
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        if r["backend"] == bk.BASELINE:
            ratio_text = "1x"
        mark = ("" if r["verified"] == "ok" else " UNVERIFIED") + ("" if peers.is_fp32(r) else " NOT fp32")
        lines.append(_line([r["label"], _threads(r), r["batch"], _ms(r.get("ms_per_image_median")),
                            _ms(r.get("ms_per_image_p90")), _f(r.get("images_per_second"), ".0f"),
                            _f(r.get("gflops"), ".1f"),
                            _f(None if r.get("peak_share") is None else 100 * r["peak_share"], ".0f"), ratio_text,
                            _f(r.get("n"), "d", "trtexec"), r.get("verdict") or ""]) + mark)
    for (backend, batch), why in _skipped(result):
        lines.append(f"  {bk.LABELS.get(backend, backend)} at batch {batch}: {why}")
    return lines


def _skipped(result):
    out = []
    for key, why in result["options"].get("skip", {}).items():
        backend, _, batch = key.partition(" batch ")
        out.append(((backend, batch), why))
    return out


def legend_lines(result):
    cpu = result["machine"]["cpu"]
    return [f"On {cpu}. ms/img: median time of one call / batch; p90: 90th percentile of the same calls; img/s = "
            f"batch / median call; GFLOP/s: {result['model']['flops_per_image'] / 1e6:.1f} MFLOP per image / median;",
            "%peak: GFLOP/s / (measured single-core peak x threads); vs ORT: median time / ONNX Runtime's at the same "
            "batch and threads, measured in the same rounds (>1: slower);",
            f"n: timed calls; real time?: batch 1 only, >= {REALTIME_FPS:.0f} images/s: 'real-time' when the p90 "
            f"call meets it too, 'median only' when only the median does.",
            "Threads: kernels by their threads= (one image per thread: batch 1 uses one), ONNX Runtime by "
            "intra_op_num_threads, the reference by threadpoolctl on numpy's BLAS."] + (
        ["Peers (--peers, docs/peers.md): OpenVINO by INFERENCE_NUM_THREADS, ncnn by num_threads (one extractor per "
         "image: it has no batch axis), LiteRT by num_threads, torch by set_num_threads; NOT fp32: fp16 storage or "
         "bf16, checked with looser bounds and kept out of the fp32 comparison."]
        if any(e.get("peer") for e in result["backends"].values()) else [])


def peak_warning(result):
    over = [r for r in result["results"] if (r.get("peak_share") or 0) > 1]
    if not over:
        return []
    worst = max(over, key=lambda r: r["peak_share"])
    kernel = result["machine"].get("blas", {}).get("architecture") or "unknown"
    return [f"%peak above 100% ({worst['label']}, batch {worst['batch']}: {100 * worst['peak_share']:.0f}%): that backend "
            f"ran faster than numpy's BLAS on the peak matrix product. Either the peak measurement was disturbed (see "
            f"Load) or the BLAS kernel used ({kernel}) is below what the core can do (an OPENBLAS_CORETYPE setting, or "
            f"SIMD the OS does not report). Read %peak as relative to numpy's BLAS on this machine."]


def summary_lines(result):
    rows = [r for r in result["results"] if r["batch"] == 1 and r.get("ms_per_image_median") is not None
            and r["verified"] != "FAILED"]
    if not rows:
        return []
    lines = ["Verdict at batch 1 (one face at a time) on this machine:"]
    for name in dict.fromkeys(r["backend"] for r in rows):
        best = min((r for r in rows if r["backend"] == name), key=lambda r: r["ms_per_image_median"])
        ok = {"real-time": "REAL TIME", "median only": "real time on the median only (p90 too slow)",
              "no": "NOT real time"}[best["verdict"]]
        lines.append(f"  {best['label']:<18}{ok}: {_ms(best['ms_per_image_median'])} ms per image, "
                     f"{best['images_per_second']:.0f} images/s ({_threads(best)} thread(s))")
    return lines


def compile_lines(result):
    lines = []
    cold = result.get("numba_first_call")
    if cold and "why" not in cold:
        lines.append(f"  numba (kernels): import + load + warm-up in a fresh process: {cold['empty_cache_s']:.1f} s with "
                     f"an empty Numba cache (JIT compile), then {cold['warm_cache_s']:.1f} s in a second process "
                     f"(bench.run.numba_first_call)")
        if cold["warm_cache_s"] > 0.5 * cold["empty_cache_s"]:
            lines.append("    the second process was not much faster: it did not reuse the cache the first one wrote "
                         "(same NUMBA_CACHE_DIR); compare with the kernels.load line below, which used the normal cache")
    elif cold:
        lines.append(f"  numba (kernels): first-call cost not measured: {cold['why']}")
    for name, entry in result["backends"].items():
        for threads, seconds in (entry.get("compile_seconds") or {}).items():
            took = f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"
            lines.append(f"  {entry['label']}: {took} in kernels.load ({threads} thread(s); compile or cache load and "
                         f"warm-up), outside every timing")
    return ["First-call cost:"] + lines if lines else []


def projection_lines(result):
    rows = result.get("projection") or []
    per_core = NANO["flop_per_cycle"] * NANO["ghz"]
    flops = result["model"]["flops_per_image"]
    lines = [f"PROJECTION for a {NANO['name']}, not a measurement: {NANO['flop_per_cycle']} FLOP/cycle/core x "
             f"{NANO['ghz']} GHz = {per_core:.1f} GFLOP/s per core, so at best {flops / per_core / 1e6:.1f} ms per "
             f"image on one core and {flops / per_core / NANO['cores'] / 1e6:.1f} ms on four.",
             "Each line applies the FLOP efficiency (%peak) measured here at one thread to the A57; four cores "
             "assume that efficiency on each core and perfect scaling (optimistic). Run python -m bench on the board "
             "for real numbers."]
    if not rows:
        return lines + ["  (no one-thread CPU rows to project from)"]
    if any(p["efficiency"] > 1 for p in rows):
        lines.append("  * above 100% of the peak measured here: projected at 100%, the A57's own peak (no code beats "
                     "8 FLOP per cycle)")
    lines.append(f"  {'backend':<18}{'batch':>6}{'eff.':>7}{'1 core ms/img':>15}{'img/s':>8}{'4 cores ms/img':>16}"
                 f"{'img/s':>8}  real time? (1 / 4 cores)")
    for p in rows:
        v = "" if p["verdict_1core"] is None else f"  {p['verdict_1core']} / {p['verdict_4cores']}"
        star = "*" if p["efficiency"] > 1 else " "
        lines.append(f"  {p['label']:<18}{p['batch']:>6}{100 * p['efficiency']:>6.0f}%{star}{_ms(p['ms_per_image_1core']):>14}"
                     f"{1e3 / p['ms_per_image_1core']:>8.0f}{_ms(p['ms_per_image_4cores']):>16}"
                     f"{1e3 / p['ms_per_image_4cores']:>8.0f}{v}")
    return lines


def under_load_lines(result):
    """The "under load" rows: batch 1 at 1 and N threads while one busy-loop process per core ran."""
    section = result.get("under_load")
    if not section:
        return []
    target = section["target"]
    lines = [f"Under load: batch 1 while {section['load_processes']} busy-loop processes (one per usable core) ran "
             f"(started and stopped by the benchmark); target: {section['threads']} threads within "
             f"{target['ratio']:g}x of 1 thread, p90 within {target['p90_over_median']:g}x of the median"]
    if section.get("why"):
        return lines + [f"  not measured: {section['why']}"]
    lines.append(f"  {'backend':<18}{'thr':>4}{'ms/img':>9}{'p90':>9}{'p90/med':>9}{'vs 1 thr':>9}  {'one-thread':<12}"
                 f"{'n':>6}")
    for r in sorted(section["rows"], key=lambda r: (bk.ALL_BACKENDS.index(r["backend"])
                                                   if r["backend"] in bk.ALL_BACKENDS else 99, r["threads"])):
        if r["verified"] == "FAILED":
            lines.append(f"  {r['label']:<18}{r['threads']:>4}   FAILED: {'; '.join(r.get('mismatches') or [])[:120]}")
            continue
        ratio, spread = r.get("ratio_to_1_thread"), r.get("p90_over_median")
        split = r.get("row_split")
        fell = f"{split['single']}/{split['single'] + split['split']} calls" if split and r["threads"] > 1 else ""
        missed = []
        if r["threads"] > 1 and ratio is not None and ratio > target["ratio"]:
            missed.append("ratio")
        if spread is not None and spread > target["p90_over_median"]:
            missed.append("p90")
        lines.append(f"  {r['label']:<18}{r['threads']:>4}{_ms(r.get('ms_per_image_median')):>9}"
                     f"{_ms(r.get('ms_per_image_p90')):>9}{_f(spread, '.1f'):>8}x{_f(ratio, '.2f'):>8}x  {fell:<12}"
                     f"{_f(r.get('n'), 'd'):>6}" + (f"  MISSED: {', '.join(missed)}" if missed else ""))
    lines.append("  one-thread: batch-1 calls the kernels ran on one thread instead of splitting rows over the threads, "
                 "the cores being busy (kernels/row_split.py); the results are identical either way.")
    if section.get("load_running_end") is not None and section["load_running_end"] < section["load_processes"]:
        lines.append(f"  only {section['load_running_end']} of {section['load_processes']} load processes were still "
                     f"running at the end: the load was lighter than intended")
    return lines


def format_report(result):
    fastest = peer_summary.lines(result)
    parts = [header(result), [""], verification_lines(result), [""],
             ["Whole network, per backend, batch and threads:"], table_lines(result), legend_lines(result),
             peak_warning(result), [""], under_load_lines(result), [""] if result.get("under_load") else [],
             summary_lines(result), [""], fastest, [""] if fastest else [],
             compile_lines(result), projection_lines(result)]
    if result.get("notes"):
        parts += [[""], ["Notes:"] + [f"  {n}" for n in result["notes"]]]
    parts += [[""], [f"Finished in {result['elapsed_s']:.0f} s."]]
    return "\n".join(line for part in parts for line in part)


# -- JSON ----------------------------------------------------------------------------------------------------
def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_json(result, path):
    with open(path, "w") as f:
        json.dump(_jsonable(result), f, indent=1)
        f.write("\n")


def load_json(path):
    with open(path) as f:
        result = json.load(f)
    if result.get("schema") != "agegender-bench/1":
        raise ValueError(f"{path}: not a python -m bench --json file (schema {result.get('schema')!r})")
    return result


# -- compare -------------------------------------------------------------------------------------------------
def _key(row):
    return row["backend"], row["threads"], row["batch"]


def format_compare(a, b, name_a="A", name_b="B"):
    """The change from run A to run B, row by row, after what differs in their conditions."""
    lines = [f"A: {name_a} ({a['created']}, {a['machine']['cpu']})",
             f"B: {name_b} ({b['created']}, {b['machine']['cpu']})"]
    diffs = []
    for label, get in (("CPU", lambda r: r["machine"]["cpu"]), ("cores", lambda r: r["machine"]["cores"]),
                       ("OpenBLAS settings", lambda r: r["machine"]["blas_env"] or "unset"),
                       ("model sha256", lambda r: r["model"]["sha256"][:12]),
                       ("peak GFLOP/s", lambda r: round(r["peak"]["gflops"], 1)),
                       ("peak matrix size", lambda r: r["peak"]["n"]),
                       ("quick", lambda r: r.get("quick"))):
        if get(a) != get(b):
            diffs.append(f"  {label}: {get(a)} -> {get(b)}")
    busy = [r["machine"].get("others_busy") for r in (a, b)]
    if any(v is not None and v > OTHERS_BUSY_LIMIT for v in busy):
        diffs.append("  other processes' share of the cores: " + " -> ".join("unknown" if v is None else f"{100 * v:.0f}%"
                                                                         for v in busy)
                     + " (above 10% the timings are disturbed: trust the vs-ORT columns more than the ms)")
    pa, pb = a["machine"]["packages"], b["machine"]["packages"]
    diffs += [f"  {k}: {pa.get(k)} -> {pb.get(k)}" for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
    lines += (["Conditions that differ (read the changes with these in mind):"] + diffs) if diffs else \
        ["Same CPU, cores, packages, BLAS settings and model."]
    lines.append("")
    lines.append(f"{'backend':<18}{'thr':>4}{'batch':>6}{'A ms/img':>10}{'B ms/img':>10}{'change':>9}{'A img/s':>9}"
                 f"{'B img/s':>9}{'A vs ORT':>10}{'B vs ORT':>10}")
    rows_a = {_key(r): r for r in a["results"] if r.get("ms_per_image_median") is not None}
    rows_b = {_key(r): r for r in b["results"] if r.get("ms_per_image_median") is not None}
    for key in sorted(set(rows_a) | set(rows_b), key=lambda k: (k[1] is None, k[1] or 0, str(k[0]), k[2])):
        ra, rb = rows_a.get(key), rows_b.get(key)
        row = ra or rb
        label = f"{row['label']:<18}{_threads(row):>4}{row['batch']:>6}"
        if ra is None or rb is None:
            lines.append(f"{label}  only in {'B' if ra is None else 'A'}")
            continue
        change = rb["ms_per_image_median"] / ra["ms_per_image_median"] - 1
        ratios = [_f(r.get("ratio_to_ort"), ".2f") + ("x" if r.get("ratio_to_ort") is not None else "") for r in (ra, rb)]
        lines.append(f"{label}{_ms(ra['ms_per_image_median']):>10}{_ms(rb['ms_per_image_median']):>10}"
                     f"{100 * change:>+8.1f}%{ra['images_per_second']:>9.0f}{rb['images_per_second']:>9.0f}"
                     f"{ratios[0]:>10}{ratios[1]:>10}")
    lines.append("change: B's median time per image / A's - 1 (negative: B is faster); vs ORT: time / ONNX Runtime's "
                 "in the same run and conditions")
    peer_lines = peer_summary.compare_lines(a, b)
    return "\n".join(lines + ([""] + peer_lines if peer_lines else []))


# -- plot ----------------------------------------------------------------------------------------------------
def plot(result, path):
    """Latency (ms per image, median with the p90 above it) against batch, a line per backend, a panel per
    thread count. Needs matplotlib (pip install matplotlib, or the kit's [plot] extra)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["results"] if r.get("ms_per_image_median") is not None]
    panels = sorted({r["threads"] for r in rows}, key=lambda t: (t is None, t or 0))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.5), squeeze=False,
                             sharey=True)
    for ax, threads in zip(axes[0], panels):
        for name in dict.fromkeys(r["backend"] for r in rows if r["threads"] == threads):
            mine = sorted((r for r in rows if r["threads"] == threads and r["backend"] == name),
                          key=lambda r: r["batch"])
            batches = [r["batch"] for r in mine]
            median = np.array([r["ms_per_image_median"] for r in mine])
            p90 = np.array([r.get("ms_per_image_p90") or r["ms_per_image_median"] for r in mine])
            color = f"C{bk.ALL_BACKENDS.index(name) % 10}" if name in bk.ALL_BACKENDS else \
                plt.cm.tab20b(peers.PEERS.index(name) % 20) if name in peers.PEERS else None
            fp32 = peers.is_fp32(mine[0])
            ax.errorbar(batches, median, yerr=[np.zeros_like(median), p90 - median], marker="o" if fp32 else "x",
                        capsize=3, label=mine[0]["label"] + ("" if fp32 else " (not fp32)"), color=color,
                        linestyle="--" if name in peers.PEERS else "-")
        ax.axhline(1e3 / REALTIME_FPS, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ticks = sorted({r["batch"] for r in rows if r["threads"] == threads})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off() if len(ticks) > 1 else None
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_title("GPU" if threads is None else f"{threads} thread{'s' if threads > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("ms per image (median, bar to p90)")
    fig.suptitle(f"agegender-kit on {result['machine']['cpu']} ({result['created']}); dotted: "
                 f"{REALTIME_FPS:.0f} images/s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
