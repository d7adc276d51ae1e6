"""kernels/row_split.py: small batches run on one thread while the cores are contended (issue 13, item 15).

No timing here: a fake clock and a fake runnable count drive the guard; the model tests check that its
decision reaches the executor and that results are the same either way.
"""
import numpy as np
import pytest

import kernels
from conftest import backend_param, random_batch
from kernels import row_split
from kernels.row_split import CHECK_S, FIRST_BACKOFF_S, MAX_BACKOFF_S, SLOWER, RowSplitGuard
from refimpl import spec


class Fake:
    def __init__(self):
        self.now, self.running = 100.0, 1

    def clock(self):
        return self.now

    def runnable(self):
        return self.running


def guard(cores=2):
    fake = Fake()
    g = RowSplitGuard(clock=fake.clock, runnable=fake.runnable, cores=cores)
    g.record(False, 1.0)                       # the warm-up's single-thread time: 1 s per image
    return g, fake


def test_splits_while_no_more_tasks_run_than_cores():
    g, fake = guard()
    fake.running = 2                           # this thread and one of its own spinning workers
    assert g.split_now(2)
    g.record(True, 0.6)
    fake.running = 3                           # a third task: looked at again only after CHECK_S
    fake.now += CHECK_S / 2
    assert g.split_now(2)
    fake.now += CHECK_S
    assert not g.split_now(2)
    fake.running = 1
    assert not g.split_now(2)                  # until the next look
    fake.now += CHECK_S
    assert g.split_now(2)
    assert g.counts == {"split": 1, "single": 1, "slow_splits": 0}


def test_a_slow_split_backs_off_doubling_and_a_fast_one_resets():
    g, fake = guard()
    waits = []
    for _ in range(6):                         # the runnable count says free, yet every split is slow
        assert g.split_now(2)
        g.record(True, SLOWER * 1.0 + 0.01)
        start = fake.now
        while not g.split_now(2):
            fake.now += 0.01
        waits.append(round(fake.now - start, 2))
    assert waits == [FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S, 4 * FIRST_BACKOFF_S, 8 * FIRST_BACKOFF_S, MAX_BACKOFF_S,
                     MAX_BACKOFF_S]
    assert g.counts["slow_splits"] == 6
    g.record(True, 0.6)                        # fast again: the next slow one waits the first back-off
    assert g.backoff == FIRST_BACKOFF_S


def test_single_thread_calls_lower_the_reference_time():
    g, fake = guard()
    g.record(False, 0.5)
    assert g.best_single == 0.5
    g.record(True, SLOWER * 0.5 + 0.01)        # slower than 1.5 x the new best: falls back
    assert not g.split_now(2) and g.counts["slow_splits"] == 1


def test_without_a_runnable_count_only_timing_decides():
    g, fake = guard()
    fake.running = None
    fake.now += 1
    assert g.split_now(2)


def test_runnable_tasks_reads_the_fourth_field(tmp_path):
    path = tmp_path / "loadavg"
    path.write_text("9.09 7.35 4.33 6/124 17596\n")
    assert row_split.runnable_tasks(str(path)) == 6
    assert row_split.runnable_tasks(str(tmp_path / "missing")) is None
    path.write_text("garbage\n")
    assert row_split.runnable_tasks(str(path)) is None


@pytest.mark.parametrize("backend_name", [backend_param(name) for name in kernels.BACKENDS])
def test_model_runs_small_batches_on_one_thread_when_told_and_gives_the_same_outputs(backend_name, monkeypatch):
    model = kernels.load(None, backend_name, threads=2)
    x = random_batch(np.random.default_rng(2), 1)
    used = []
    real = model.backend.run_network

    def spy(*args):
        used.append(args[-1])                  # the thread count the executor got
        return real(*args)

    monkeypatch.setattr(model.backend, "run_network", spy)
    outputs = {}
    for split in (True, False):
        monkeypatch.setattr(model.row_split, "split_now", lambda threads, split=split: split)
        outputs[split] = model.forward(x)
    model.forward(random_batch(np.random.default_rng(3), 2))       # batch >= threads: not guarded
    assert used == [2, 1, 2]
    for name in spec.OUTPUT_NAMES:
        np.testing.assert_array_equal(outputs[True][name], outputs[False][name])
    assert model.row_split.counts["split"] >= 1 and model.row_split.counts["single"] >= 1
