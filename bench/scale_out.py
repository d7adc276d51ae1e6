"""Photos per second of `agegender predict --parquet` on 1, 2, ... local Dask workers, and each worker's peak memory.

    python -m bench.scale_out --photos 200 --workers 1 2        # docs/scale-out.md quotes its output

The photos are UTKFace chips (the folder in AGEGENDER_UTKFACE, or --utkface) pasted, scaled 1.2x,
onto 640 x 480 gray backgrounds so that the detector finds them; they are made under --folder (in /tmp by
default, never in the repository). For each worker count a LocalCluster is started (not timed), each
worker loads the model and detector (not timed), then the whole folder runs into a new Parquet folder
(timed, wall clock). A benchmark, not a test: on a shared machine the numbers are noisy.
"""
import argparse
import os
import shutil
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UTKFACE = os.environ.get("AGEGENDER_UTKFACE")


def make_photos(folder, count, seed=0):
    """`count` 640 x 480 PNG photos, one UTKFace face each (made once; reused when the folder has them)."""
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    if len([n for n in os.listdir(folder) if n.endswith(".png")]) >= count:
        return folder
    names = sorted(n for n in os.listdir(UTKFACE) if n.endswith(".jpg"))[::37][:count]
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        face = Image.open(os.path.join(UTKFACE, name)).convert("RGB").resize((240, 240), Image.BILINEAR)
        canvas = Image.new("RGB", (640, 480), (110, 110, 110))
        canvas.paste(face, (int(rng.integers(0, 400)), int(rng.integers(0, 240))))
        canvas.save(os.path.join(folder, f"photo{i:04d}.png"))
    return folder


def _load(settings):
    from agegender import scale

    scale.cached_estimator(settings)


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # Linux: kB


def cpu_seconds():
    return time.process_time()


def measure(folder, workers, chunk_size):
    """-> (photos, seconds, CPU seconds of the workers, [(idle, peak) RSS of each worker in MB]) of one --parquet
    run on `workers` processes (0: in this process, without Dask)."""
    from agegender import scale

    count = len([n for n in os.listdir(folder) if n.endswith(".png")])
    settings = scale.Settings()
    out = tempfile.mkdtemp(prefix="agegender-scale-out-")
    try:
        if workers == 0:
            idle = peak_rss_mb()
            _load(settings)
            cpu, started = time.process_time(), time.perf_counter()
            scale.predict_to_parquet(folder, os.path.join(out, "faces"), chunk_size=chunk_size)
            return count, time.perf_counter() - started, time.process_time() - cpu, [(idle, peak_rss_mb())]
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            idle = client.run(peak_rss_mb)
            client.run(_load, settings)                                        # model and detector, not timed
            cpu, started = client.run(cpu_seconds), time.perf_counter()
            scale.predict_to_parquet(folder, os.path.join(out, "faces"), client=client, chunk_size=chunk_size)
            seconds = time.perf_counter() - started
            used = sum(client.run(cpu_seconds).values()) - sum(cpu.values())
            peaks = client.run(peak_rss_mb)
        return count, seconds, used, [(idle[w], peaks[w]) for w in sorted(peaks)]
    finally:
        shutil.rmtree(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="0: in this process, without Dask")
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "agegender-scale-photos"))
    args = parser.parse_args(argv)
    folder = make_photos(args.folder, args.photos)
    print(f"{args.photos} photos of 640 x 480 in {folder}, chunks of {args.chunk_size}, {os.cpu_count()} CPUs")
    print("workers 0: this process, without Dask. CPU s/photo: the workers' CPU time per photo (less noisy than\n"
          "wall time on a shared machine). RSS: each worker process's resident memory before loading the model,\n"
          "and its peak after the run (MB)")
    print(f"{'workers':>7}  {'seconds':>8}  {'photos/s':>8}  {'CPU s/photo':>11}  RSS idle -> peak (MB)")
    for workers in args.workers:
        count, seconds, cpu, memory = measure(folder, workers, args.chunk_size)
        print(f"{workers:>7}  {seconds:8.1f}  {count / seconds:8.2f}  {cpu / count:11.3f}  "
              f"{', '.join(f'{idle:.0f} -> {peak:.0f}' for idle, peak in memory)}", flush=True)


if __name__ == "__main__":
    main()
