"""When a batch smaller than the thread count splits each stage's rows over the threads, or runs on one thread.

Splitting one image's rows puts a barrier after each of the 18 stages: every thread must get a core
18 times per image. With the cores busy with other processes, each barrier can wait for a descheduled
thread to get its next scheduler slice (milliseconds), so a 0.45 ms batch-1 call took 79 to 358 ms on a
loaded 2-core machine. Passive waiting (OMP_WAIT_POLICY=passive, GOMP_SPINCOUNT=0) only stops the
waiting thread from burning a core; the barrier still waits for the thread that has none. So small
batches run on one thread while the cores are contended, which the guard below tells in two ways:
- before splitting (looked at every CHECK_S): the number of runnable tasks
  (/proc/loadavg, Linux) leaves fewer free cores than the extra threads need;
- after a split call: it took longer per image than SLOWER x the fastest single-thread call seen
  (the count is unknown, or it missed contention it cannot see): then the calls run on one thread for a
  back-off period (doubling while split calls stay slow, up to MAX_BACKOFF_S) before one probes again.
Results do not change: the split and the single-thread run compute every output with the same code in
the same order (tests check threads 1 and 2 bit for bit).

Costs: two clock reads per small-batch call, a read of /proc/loadavg at most every CHECK_S. Where
/proc/loadavg is missing only the timing check works (one slow probe per back-off period under load).
The runnable count is machine-wide: in a container limited to a few cores of a busy host, small
batches stay on one thread. Batches at least as large as the thread count take whole images per thread
(no per-stage barrier) and are not guarded.
"""
import os
import threading
import time

SLOWER = 1.5            # a split call slower than this times the best single-thread call: cores are contended
CHECK_S = 0.1           # how often a guarded model looks at the runnable count
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def runnable_tasks(path="/proc/loadavg"):
    """Tasks runnable right now on the whole machine, this thread included (the 4th field's numerator), or None."""
    try:
        with open(path) as f:
            return int(f.read().split()[3].partition("/")[0])
    except (OSError, ValueError, IndexError):
        return None


class RowSplitGuard:
    def __init__(self, clock=time.perf_counter, runnable=runnable_tasks, cores=None):
        self.clock, self.runnable = clock, runnable
        self.cores = usable_cores() if cores is None else cores
        self.best_single = None          # fastest single-thread seconds per image seen
        self.splitting = False
        self.next_check = 0.0            # clock time of the next look at the cores
        self.backoff = FIRST_BACKOFF_S
        self.counts = {"split": 0, "single": 0, "slow_splits": 0}
        self._lock = threading.Lock()

    def cores_free(self, threads):
        """False when the other runnable tasks leave fewer than `threads` cores; None when unknown. The count
        includes this thread and may include this process's own OpenMP workers, which spin a while after each
        split call (libgomp: GOMP_SPINCOUNT): counting all threads - 1 of them as ours, the others number
        running - threads at least, and leave `threads` cores when running - threads <= cores - threads."""
        running = self.runnable()
        if running is None:
            return None
        return running <= self.cores

    def split_now(self, threads):
        """True: split this call's rows over `threads` threads; False: run it on one thread."""
        if self.best_single is None:
            return True
        now = self.clock()
        if now < self.next_check:
            return self.splitting
        with self._lock:
            if now >= self.next_check:                   # not decided meanwhile by another thread
                self.splitting = self.cores_free(threads) is not False
                self.next_check = now + CHECK_S          # the runnable count is cheap to read again
            return self.splitting

    def record(self, split, seconds_per_image):
        """After a call: how it ran and how long it took per image."""
        with self._lock:
            if not split:
                self.counts["single"] += 1
                if self.best_single is None or seconds_per_image < self.best_single:
                    self.best_single = seconds_per_image
                return
            self.counts["split"] += 1
            if self.best_single is None or seconds_per_image <= SLOWER * self.best_single:
                self.backoff = FIRST_BACKOFF_S
                return
            # the threads did not get their cores although the runnable count said they would (or it is unknown):
            # one thread until the back-off ends, then a split call probes again
            self.counts["slow_splits"] += 1
            self.splitting = False
            self.next_check = max(self.next_check, self.clock() + self.backoff)
            self.backoff = min(2 * self.backoff, MAX_BACKOFF_S)
