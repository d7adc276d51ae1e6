#!/usr/bin/env bash
# bench/arm64-check.sh: build and test the kit on the Jetson Nano's CPU, emulated (aarch64, Cortex-A57).
#
#   sudo bash bench/arm64-check.sh            # root: it installs packages, mounts, chroots
#
# What it does, in order:
#   1. host tools: qemu-user-static, binfmt-support and debootstrap (installed with apt-get when missing);
#      binfmt_misc mounted and qemu-aarch64 enabled, so arm64 programs run on this x86-64 machine
#   2. the arm64 root: a minbase Debian bookworm made by debootstrap, with python3, venv, pip, python3-dev,
#      gcc and g++, and a venv holding the test extra's aarch64 wheels (no torch: the training tests skip).
#      Made once, outside the repository, and reused: $AGEGENDER_ARM64_ROOT (default
#      /var/cache/agegender-arm64). Delete that folder to start again from nothing. The script itself deletes
#      an unfinished root only when it is empty or carries the marker it writes before debootstrap, and only
#      with nothing mounted under it (bench/arm64_guard.sh).
#   3. the working tree (git ls-files: tracked plus untracked-not-ignored files, as they are on disk)
#      copied into the root and pip-installed there (`pip install -e .[test]`), the Cython extension
#      built with the board's flags (AGEGENDER_CFLAGS=-mcpu=cortex-a57, never -march/-mcpu=native)
#   4. under QEMU_CPU=cortex-a57 (ARMv8.0-A + NEON + FMA; no SVE, no dot product, no fp16 arithmetic,
#      the Nano's instruction set): the CPU features the emulated programs see, the test suite, and
#      `python -m bench --quick`
#   5. a summary: tests passed/failed/skipped, backends built and verified against weights/golden.npz,
#      and what the timings mean (nothing: emulation is not the board)
# Mounts (proc, sys, dev, dev/pts, dev/shm in the root) are undone on every exit, error or ^C.
#
# Environment:
#   AGEGENDER_ARM64_ROOT     where the arm64 root lives (default /var/cache/agegender-arm64)
#   AGEGENDER_ARM64_MIRROR   Debian mirror for debootstrap (default: the first Debian mirror in the host's apt sources)
#   AGEGENDER_ARM64_PYTEST   pytest arguments instead of "tests" (e.g. "-x tests/test_kernels_ops.py"); the
#                            summary says when the selection was not the whole suite
#   AGEGENDER_NCNN_CACHE     where this PC's converted ncnn models are (default ~/.cache/agegender/ncnn of the
#                            user who ran sudo); with the default benchmark arguments the ncnn peer runs and is
#                            checked in the root when its wheel installs there and the model was converted here
#   AGEGENDER_ARM64_BENCH    arguments of the benchmark (default "--quick --peak-size 512": the peak only scales
#                            the Nano projection, meaningless under emulation, and 2048^3 takes minutes there)
#   HYPOTHESIS_PROFILE       passed on (default ci: derandomized, 12 examples per property)
# Exit status: 0 when every test passed and every built backend verified; 1 otherwise.
set -euo pipefail
# the whole script is one block, read before it runs: editing the file mid-run cannot change a run
{
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/arm64_guard.sh
. "$REPO/bench/arm64_guard.sh"            # the delete and unmount guards (tests/test_arm64_guard.py)
ROOT="${AGEGENDER_ARM64_ROOT:-/var/cache/agegender-arm64}"
SUITE=bookworm
CPU=cortex-a57
SRC=/opt/agegender-kit                    # inside the root
VENV=/opt/agegender-venv                  # inside the root
OUTDIR=/opt/agegender-out                 # inside the root: logs, junit xml, bench json
START=$(date +%s)

say() { printf '\n=== [%4ds] %s\n' "$(( $(date +%s) - START ))" "$*"; }
die() { printf 'arm64-check: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (sudo bash bench/arm64-check.sh): it installs packages, mounts and chroots"
# from here on ROOT is canonical: every mount, unmount and delete below uses this one spelling
ROOT=$(arm64_canonical_root "$ROOT") || exit 2
arm64_check_root_location "$ROOT" "$REPO" || exit 2

# -- 1. host tools and binfmt ---------------------------------------------------------------------------
say "host: qemu-user-static, binfmt-support, debootstrap"
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
qemu-aarch64-static --version | head -1
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2>/dev/null || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --import qemu-aarch64 2>/dev/null || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
    || die "binfmt_misc has no enabled qemu-aarch64 entry (update-binfmts --enable qemu-aarch64 failed)"
# F (fix binary): the kernel opened the interpreter at registration, so it works inside the chroot too
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || die "the qemu-aarch64 binfmt entry lacks the F flag; Debian's qemu-user-static registers it with F"

# -- mounts, always undone ------------------------------------------------------------------------------
cleanup() {
    local rc=$?
    # everything mounted under the root, the last mounted first: read from /proc/mounts, not remembered, so an
    # interrupted run (or an earlier one) cannot leave a mount behind
    arm64_unmount_all "$ROOT" || true
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# qemu-user leaves /proc/cpuinfo the host's (x86) one; onnxruntime's CPU probe (cpuinfo) segfaults reading it on
# aarch64, and LLVM finds no CPU name in it. The root sees the Nano's instead: Cortex-A57 (0x41/0xd07), ARMv8.0
# features, one entry per CPU this machine gives us.
nano_cpuinfo() {
    local i
    for (( i=0; i<$(nproc); i++ )); do
        printf 'processor\t: %d\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nBogoMIPS\t: 38.40\n' "$i"
        printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\nCPU implementer\t: 0x41\n'
        printf 'CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd07\nCPU revision\t: 1\n\n'
    done
}

mount_into_root() {
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    nano_cpuinfo > "$ROOT/etc/agegender-cpuinfo"
    mount --bind "$ROOT/etc/agegender-cpuinfo" "$ROOT/proc/cpuinfo"
    mountpoint -q "$ROOT/sys" || mount --bind -o ro /sys "$ROOT/sys" 2>/dev/null || true
    mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
    mountpoint -q "$ROOT/dev/pts" || mount --bind /dev/pts "$ROOT/dev/pts"
    mkdir -p "$ROOT/dev/shm"
    mountpoint -q "$ROOT/dev/shm" || mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm"
}

# run a command in the root: a clean environment, the emulated CPU set. NUMBA_CPU_NAME: on the board LLVM
# reads "CPU part 0xd07" from /proc/cpuinfo and targets the cortex-a57; under qemu-user /proc is this PC's,
# so LLVM would fall back to "generic" ARMv8: name the board's CPU so Numba compiles exactly as it would there.
in_root() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
        PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        QEMU_CPU="$CPU" PIP_DISABLE_PIP_VERSION_CHECK=1\
        NUMBA_CACHE_DIR=/var/cache/agegender-numba NUMBA_CPU_NAME="$CPU" \
        ${ROOT_CA:+PIP_CERT=$ROOT_CA SSL_CERT_FILE=$ROOT_CA REQUESTS_CA_BUNDLE=$ROOT_CA} \
        ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} ${https_proxy:+https_proxy=$https_proxy} \
        ${HTTP_PROXY:+HTTP_PROXY=$HTTP_PROXY} ${http_proxy:+http_proxy=$http_proxy} \
        ${NO_PROXY:+NO_PROXY=$NO_PROXY} ${no_proxy:+no_proxy=$no_proxy} "$@"
}

# -- 2. the arm64 root ----------------------------------------------------------------------------------
if [ ! -e "$ROOT/$ARM64_DONE" ]; then
    mirror="${AGEGENDER_ARM64_MIRROR:-}"
    if [ -z "$mirror" ]; then
        mirror=$( { grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
                    /etc/apt/sources.list.d 2>/dev/null || true; } | awk 'NR == 1 {print $2}')
        [ -n "$mirror" ] || die "no Debian mirror in the host's apt sources: set AGEGENDER_ARM64_MIRROR=<a Debian mirror URL>"
    fi
    say "arm64 root: debootstrap $SUITE arm64 (minbase) into $ROOT from $mirror (minutes, once)"
    # an unfinished root (a failed first build) is deleted only if empty or marked by this script, and only once
    # nothing is mounted under it (an interrupted run's mounts are undone first)
    arm64_unmount_all "$ROOT" || die "something is still mounted under $ROOT; not deleting it"
    arm64_fresh_root "$ROOT" || die "cannot start a new arm64 root in $ROOT"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,python3-dev,gcc,g++,ca-certificates \
        "$SUITE" "$ROOT" "$mirror" > /tmp/agegender-arm64-debootstrap.log 2>&1 \
        || { tail -30 /tmp/agegender-arm64-debootstrap.log; die "debootstrap failed (log: /tmp/agegender-arm64-debootstrap.log)"; }
    touch "$ROOT/$ARM64_DONE"
else
    say "arm64 root: reusing $ROOT"
fi
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true    # pip reaches PyPI from inside
# the host's CA bundle too (a proxy that re-signs TLS, as here, is trusted by the host's bundle only)
HOST_CA="${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}"
ROOT_CA=
if [ -r "$HOST_CA" ] && [ -f "$HOST_CA" ]; then
    cp -L "$HOST_CA" "$ROOT/etc/agegender-host-ca.crt" && ROOT_CA=/etc/agegender-host-ca.crt
fi
mount_into_root
in_root uname -m
in_root python3 --version

# -- the venv with the test extra's dependencies (aarch64 wheels), once per requirement list ------------
# `pip install .[test]`'s requirements but the package itself and the face detector; torch (the train extra)
# stays out: the training tests skip
REQS=$(python3 "$REPO/bench/arm64_summary.py" --requirements "$REPO/setup.py" 2>/dev/null || true)
[ -n "$REQS" ] || REQS=$'numpy\nonnx\npytest\nhypothesis\nonnxruntime\nscipy\nnumba\npillow\nthreadpoolctl'
# the ncnn peer (bench/peers/ncnn_peer.py) installs on its own below, where its wheel does; pnnx stays out: its
# conversion traces the PyTorch module and the root has no torch (this PC converts, see the ncnn step in 4.)
REQS=$(printf '%s\n' "$REQS" | grep -v -E '^(ncnn|pnnx)([<>=!~ ;]|$)' || true)
BUILD_REQS=$'setuptools>=64\nwheel\nCython>=3.0'
WANT=$(printf '%s\n%s\n' "$REQS" "$BUILD_REQS" | sort -u)
if [ ! -x "$ROOT$VENV/bin/python" ] || [ "$(cat "$ROOT$VENV/.reqs" 2>/dev/null)" != "$WANT" ]; then
    say "arm64 venv: pip installs the aarch64 wheels of the test extra (once per requirement list)"
    [ -x "$ROOT$VENV/bin/python" ] || in_root python3 -m venv "$VENV"
    printf '%s\n' "$WANT" > "$ROOT/tmp/agegender-reqs.txt"
    in_root pip install -q --upgrade pip
    in_root pip install -q --prefer-binary -r /tmp/agegender-reqs.txt
    printf '%s\n' "$WANT" > "$ROOT$VENV/.reqs"
else
    say "arm64 venv: reusing $VENV (requirements unchanged)"
fi
if ! in_root python -c "import ncnn" 2>/dev/null; then
    say "arm64 venv: the ncnn peer's wheel (optional: without it the benchmark has no ncnn rows)"
    in_root pip install -q --only-binary=:all: "ncnn>=1.0.20261020" || echo "no ncnn wheel installs in the root"
fi

# -- 3. copy the working tree and install it ------------------------------------------------------------
say "working tree -> $ROOT$SRC, pip install -e .[test] with AGEGENDER_CFLAGS=-mcpu=$CPU"
rm -rf "$ROOT$SRC" "$ROOT$OUTDIR"
mkdir -p "$ROOT$SRC" "$ROOT$OUTDIR"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    ( cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf - ) | tar -xpf - -C "$ROOT$SRC"
    REV="$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || echo '+changes')"
else
    ( cd "$REPO" && tar --exclude=./build --exclude='*.so' --exclude='*.egg-info' --exclude=__pycache__ \
        --exclude=./.git --exclude=./runs -cf - . ) | tar -xpf - -C "$ROOT$SRC"
    REV="(not a git checkout)"
fi
# Numba's on-disk cache (NUMBA_CACHE_DIR, kept in the root) is valid while a source file's mtime and size are
# unchanged. A fresh clone gives every file a new mtime, so the copies get one made from their content instead:
# an unchanged kernel file reuses the kernels an earlier run compiled (over 10 minutes under emulation).
( cd "$ROOT$SRC" && find . -name '*.py' -type f -print0 | while IFS= read -r -d '' f; do
      touch -d "@$(( 0x$(sha256sum "$f" | cut -c1-7) ))" "$f"; done )
# no data set in the root on purpose: AGEGENDER_UTKFACE is unset there (env -i); the UTKFace tests skip, saying so
in_root sh -c "cd $SRC && AGEGENDER_CFLAGS=-mcpu=$CPU CFLAGS= AGEGENDER_NATIVE= \
    pip install --no-build-isolation --no-deps -v -e . > $OUTDIR/install.log 2>&1" \
    || { tail -40 "$ROOT$OUTDIR/install.log"; die "pip install -e . failed in the arm64 root"; }
grep -h "kernels: building the Cython backend with" "$ROOT$OUTDIR/install.log" | tail -1 || true
grep -hi "WARNING: the Cython backend was not built" "$ROOT$OUTDIR/install.log" || true
in_root pip check > "$ROOT$OUTDIR/pipcheck.log" 2>&1 || true

# -- 4. under the Cortex-A57 ----------------------------------------------------------------------------
say "QEMU_CPU=$CPU: what the emulated CPU offers"
in_root python -c "$(cat <<'EOF'
import numpy, platform
from numpy._core._multiarray_umath import __cpu_features__ as f
have = sorted(k for k, v in f.items() if v)
print("machine", platform.machine(), "| numpy sees:", " ".join(have))
for k in ("ASIMDDP", "ASIMDHP", "SVE", "ASIMDFHM"):
    assert not f.get(k), f"{k} present: not a Cortex-A57"
assert f.get("ASIMD"), "no NEON"
EOF
)" | tee "$ROOT$OUTDIR/cpu.txt"

say "QEMU_CPU=$CPU: python -m pytest ${AGEGENDER_ARM64_PYTEST:-tests} (slow: emulated, and Numba compiles its kernels once)"
set +e
in_root sh -c "cd $SRC && HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci} python -m pytest -q -rs -p no:cacheprovider \
    --junitxml=$OUTDIR/junit.xml ${AGEGENDER_ARM64_PYTEST:-tests}" 2>&1 | tee "$ROOT$OUTDIR/pytest.log"
TEST_RC=${PIPESTATUS[0]}

# the ncnn peer, checked against the golden outputs like every backend (a wrong answer fails the run): with the
# default benchmark arguments, where the ncnn wheel imports and this PC has converted the model (python -m
# bench.peers.ncnn_peer, with torch and pnnx: the root cannot), the converted files are copied into the root
NCNN_ARGS=""
if [ -z "${AGEGENDER_ARM64_BENCH:-}" ] && in_root python -c "import ncnn" 2>/dev/null; then
    SHA=$(sha256sum "$REPO/weights/agegender.onnx" | cut -d' ' -f1)
    HOST_HOME=$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6 || true)
    HOST_NCNN="${AGEGENDER_NCNN_CACHE:-${HOST_HOME:-$HOME}/.cache/agegender/ncnn}/$SHA"
    if [ -f "$HOST_NCNN/model.ncnn.param" ] && [ -f "$HOST_NCNN/model.ncnn.bin" ]; then
        mkdir -p "$ROOT/root/.cache/agegender/ncnn/$SHA"
        cp "$HOST_NCNN/model.ncnn.bin" "$HOST_NCNN/model.ncnn.param" "$ROOT/root/.cache/agegender/ncnn/$SHA/"
        NCNN_ARGS="--peers ncnn"
    else
        echo "ncnn: no converted model at $HOST_NCNN: no ncnn rows (convert first: python -m bench.peers.ncnn_peer)"
    fi
fi

say "QEMU_CPU=$CPU: python -m bench ${AGEGENDER_ARM64_BENCH:---quick --peak-size 512} $NCNN_ARGS"
in_root sh -c "cd $SRC && python -m bench ${AGEGENDER_ARM64_BENCH:---quick --peak-size 512} $NCNN_ARGS --no-progress --json $OUTDIR/bench.json" \
    2>&1 | tee "$ROOT$OUTDIR/bench.log"
BENCH_RC=${PIPESTATUS[0]}
set -e

# -- 5. summary -----------------------------------------------------------------------------------------
say "summary"
ELAPSED=$(( $(date +%s) - START ))
in_root python "$SRC/bench/arm64_summary.py" --out "$OUTDIR" --cpu "$CPU" --rev "$REV" \
    --test-rc "$TEST_RC" --bench-rc "$BENCH_RC" --elapsed "$ELAPSED" --pytest-args "${AGEGENDER_ARM64_PYTEST:-}" \
    --profile "${HYPOTHESIS_PROFILE:-ci}" | tee "$ROOT$OUTDIR/summary.txt"
SUMMARY_RC=${PIPESTATUS[0]}
echo "(logs: $ROOT$OUTDIR)"
exit "$SUMMARY_RC"
}
