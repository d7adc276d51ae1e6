"""agegender-kit's benchmark kit: `python -m bench` and `pytest bench --benchmark-only`."""
