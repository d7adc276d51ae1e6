"""Experiments that answer a question about the model (a gradient ratio, a ceiling): evidence for the model card
and docs/model-notes.md, not product code. Run from the repository root (`python -m experiments.NAME`); they
import training, refimpl and agegender, nothing imports them, and setup.py does not install them."""
