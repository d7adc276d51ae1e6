"""Per configuration (threads, batch): the fastest engine, the fastest fp32 peer and the kernels' time ratio to
it, from a `python -m bench` result's rows. Rows that are not fp32-equivalent (fp16 storage, bf16, TensorRT FP16)
never enter the fp32 comparison; where one is faster than every fp32 row it is named apart."""
from . import is_fp32

KERNELS = ("numba", "cython")
REFERENCE = "numpy"


def _timed(rows):
    return [r for r in rows if r.get("ms_per_image_median") is not None and r.get("verified") != "FAILED"]


def fastest(rows):
    """-> [{"threads", "batch", "fastest": row, "peer": row or None, "kernels": {backend: time / peer's time},
    "peers": {label: best kernel's time / that peer's}, "faster_not_fp32": [rows]}] ordered by threads, batch."""
    out = []
    timed = _timed(rows)
    for threads, batch in sorted({(r["threads"], r["batch"]) for r in timed}, key=lambda k: (k[0] is None, k[0] or 0,
                                                                                           k[1])):
        here = [r for r in timed if r["threads"] == threads and r["batch"] == batch]
        fp32 = [r for r in here if is_fp32(r)]
        if not fp32:
            continue
        best = min(fp32, key=lambda r: r["ms_per_image_median"])
        peers = [r for r in fp32 if r["backend"] not in KERNELS + (REFERENCE,)]
        peer = min(peers, key=lambda r: r["ms_per_image_median"]) if peers else None
        kernels = {r["backend"]: r["ms_per_image_median"] / peer["ms_per_image_median"]
                   for r in fp32 if peer and r["backend"] in KERNELS}
        best_kernel = min((r for r in fp32 if r["backend"] in KERNELS), key=lambda r: r["ms_per_image_median"],
                          default=None)
        each = {p["label"]: best_kernel["ms_per_image_median"] / p["ms_per_image_median"]
                for p in sorted(peers, key=lambda r: r["ms_per_image_median"])} if best_kernel else {}
        apart = sorted((r for r in here if not is_fp32(r) and r["ms_per_image_median"] < best["ms_per_image_median"]),
                       key=lambda r: r["ms_per_image_median"])
        out.append({"threads": threads, "batch": batch, "fastest": best, "peer": peer, "kernels": kernels,
                    "best_kernel": best_kernel, "peers": each, "faster_not_fp32": apart})
    return out


def _ms(value):
    return f"{value:.3g}"


def lines(result):
    """The report's "Fastest per configuration" section (empty when there is nothing to compare)."""
    found = fastest(result["results"])
    if not found or not any(f["peer"] for f in found):
        return []
    out = ["Fastest per configuration (fp32-equivalent rows; kernels' time / the fastest fp32 peer's, <1: the "
           "kernels are faster):"]
    for f in found:
        where = "gpu" if f["threads"] is None else f"{f['threads']} thread{'s' if f['threads'] > 1 else ''}"
        best, peer = f["fastest"], f["peer"]
        text = f"  batch {f['batch']:>2}, {where}: fastest {best['label']} {_ms(best['ms_per_image_median'])} ms/img"
        if peer:
            text += f"; fastest fp32 peer {peer['label']} {_ms(peer['ms_per_image_median'])} ms/img"
        if f["kernels"]:
            text += "; " + ", ".join(f"{k} {v:.2f}x" for k, v in sorted(f["kernels"].items()))
        out.append(text)
        if len(f["peers"]) > 1:
            kernel = f["best_kernel"]["label"]
            out.append(f"      {kernel} vs each fp32 peer: " + ", ".join(f"{name} {v:.2f}x" for name, v in
                                                                          f["peers"].items()))
        if f["faster_not_fp32"]:
            out.append("      faster, NOT fp32-equivalent (kept out of the comparison): " + ", ".join(
                f"{r['label']} {_ms(r['ms_per_image_median'])} ms/img" for r in f["faster_not_fp32"]))
    return out


def compare_lines(a, b):
    """--compare: the kernels' ratio to the fastest fp32 peer per configuration, in run A and run B."""
    fa = {(f["threads"], f["batch"]): f for f in fastest(a["results"])}
    fb = {(f["threads"], f["batch"]): f for f in fastest(b["results"])}
    keys = sorted({k for k in set(fa) | set(fb) if (fa.get(k) or fb.get(k))["peer"]},
                  key=lambda k: (k[0] is None, k[0] or 0, k[1]))
    if not keys:
        return []
    out = ["Kernels' time / the fastest fp32 peer's, per configuration (A -> B):"]
    for key in keys:
        parts = []
        for f in (fa.get(key), fb.get(key)):
            if not f or not f["peer"]:
                parts.append("-")
                continue
            ratios = ", ".join(f"{k} {v:.2f}x" for k, v in sorted(f["kernels"].items()))
            parts.append(f"{f['peer']['label']}: {ratios or 'no kernels'}")
        where = "gpu" if key[0] is None else f"{key[0]} thr"
        out.append(f"  batch {key[1]:>2}, {where}: {parts[0]}  ->  {parts[1]}")
    return out
