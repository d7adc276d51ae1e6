"""What every benchmark backend is (bench/backends.py, bench/tensorrt_backend.py): a Runner, or Unavailable."""
from refimpl import golden


class Unavailable(Exception):
    """This backend cannot run here; the message says why (shown in the report's row)."""


class Runner:
    """One backend at one thread count. Subclasses set `run`; `external` runners time themselves (trtexec)."""
    name = "?"
    external = False
    device = "cpu"

    def __init__(self, threads):
        self.threads = threads
        self.notes = []                 # shown under the table, e.g. "threads uncontrolled"
        self.compile_seconds = None     # first-call cost paid at load (Numba JIT or cache load), if known
        self.isa = None

    def run(self, x):
        raise NotImplementedError

    def tolerance(self, output_name):
        return golden.tolerance(output_name)

    def close(self):
        pass
