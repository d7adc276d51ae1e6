"""A known background load for the "under load" benchmark row: one busy-loop process per core.

    with BusyLoad(processes=2) as load:      # started here
        ...time something...
    # stopped here, also on an exception or Ctrl-C

Each process is a separate Python interpreter spinning in a loop (no shared state with this one, started
with subprocess, so a fork of a process holding OpenMP or Numba threads never happens). They stop when
BusyLoad exits (terminate, then kill after a grace period), and on their own when their parent is gone
(a SIGKILLed benchmark) or after max_seconds, so a load process can never outlive a run by much.
"""
import os
import subprocess
import sys
import time

BUSY_LOOP = """\
import os, sys, time
parent, end = int(sys.argv[2]), time.monotonic() + float(sys.argv[1])
while os.getppid() == parent and time.monotonic() < end:
    for _ in range(200000):
        pass
"""
GRACE_S = 5.0


class BusyLoad:
    def __init__(self, processes=None, max_seconds=900.0):
        if processes is None:
            try:
                processes = len(os.sched_getaffinity(0))
            except AttributeError:
                processes = os.cpu_count() or 1
        self.processes = int(processes)
        self.max_seconds = float(max_seconds)
        self.procs = []

    def __enter__(self):
        try:
            for _ in range(self.processes):
                self.procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(self.max_seconds), str(os.getpid())],
                                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def running(self):
        """How many of the load processes are alive."""
        return sum(p.poll() is None for p in self.procs)

    def stop(self):
        """Terminate every load process, kill those still alive after GRACE_S, and reap them all."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + GRACE_S
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
