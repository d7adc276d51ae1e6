"""The bundled model, installed as the package `agegender_weights` (see setup.py's package_dir)."""
