#!/usr/bin/env bash
# Regenerates the example output in docs/predict.md (run it again when the bundled weights change).
#   bash docs/predict_examples.sh [astronaut.png]
# The photo: scikit-image's data/astronaut.png (NASA, public domain), from the argument or an installed skimage.
set -uo pipefail
photo=${1:-$(python3 -c 'import os, skimage; print(os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png"))')}
work=$(mktemp -d)
cp "$photo" "$work/astronaut.png"
cd "$work"
mkdir -p photos && cp astronaut.png photos/ && echo "not an image" > photos/notes.jpg && head -c 2000 astronaut.png > photos/cut.png
show() { echo "\$ $*"; "$@"; echo "[exit status $?]"; echo; }
show agegender predict astronaut.png
show agegender predict --min-score 0.5 --save-chips chips astronaut.png
show agegender predict --chips chips/astronaut.png.face0.png --json
show agegender predict --chips --csv --heads chips/astronaut.png.face0.png
show agegender predict --no-progress photos
rm -rf "$work"
