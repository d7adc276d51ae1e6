"""`python -m agegender predict ...`, the same as the `agegender` console script."""
import sys

from .cli import main

sys.exit(main())
