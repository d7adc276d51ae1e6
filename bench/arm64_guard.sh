# bench/arm64_guard.sh: what bench/arm64-check.sh may delete and unmount, as small functions (sourced).
#
# The arm64 root is deleted (rm -rf) when a build has to start again, and everything mounted under it is
# unmounted on every exit. Both act on the root's canonical absolute path (realpath -m: no trailing slash,
# no //, no .., no symlink), so that a path spelled another way can neither escape the guard nor leave a
# mount (the host's /dev, /proc, /sys) under a folder about to be deleted.
#
# tests/test_arm64_guard.py calls these without root, qemu or debootstrap:
#   AGEGENDER_ARM64_MOUNTS  the mount table to read (default /proc/mounts); the tests pass a fake one

ARM64_MARKER=.agegender-arm64-root       # written into an empty root before debootstrap starts
ARM64_DONE=.agegender-root-ok            # written once the root is complete

arm64_err() { printf 'arm64-check: %s\n' "$*" >&2; }

# the canonical absolute path of $1 (relative paths are taken from the current folder)
arm64_canonical_root() {
    [ -n "$1" ] || { arm64_err "AGEGENDER_ARM64_ROOT is empty"; return 2; }
    realpath -m -- "$1"
}

# 0 when the canonical root $1 may hold the arm64 root: not /, not a top-level folder (/work, /home, /var),
# not the repository $2, inside it or above it
arm64_check_root_location() {
    local root=$1 repo
    repo=$(realpath -m -- "$2")
    case "$root" in
        /*) ;;
        *) arm64_err "AGEGENDER_ARM64_ROOT=$root is not an absolute path"; return 2;;
    esac
    if [ "$root" = / ] || [ "${root%/*}" = "" ]; then
        arm64_err "AGEGENDER_ARM64_ROOT=$root is / or a top-level folder; use a folder of its own" \
                  "(default /var/cache/agegender-arm64)"
        return 2
    fi
    if [ "$root" = "$repo" ] || [[ $root == "$repo"/* ]] || [[ $repo == "$root"/* ]]; then
        arm64_err "AGEGENDER_ARM64_ROOT=$root must be outside the repository ($repo), and not above it"
        return 2
    fi
}

# /proc/mounts writes space, tab, newline and backslash in a path as \ooo (octal): decode one field
arm64_decode_mount_field() {
    local rest=$1 out="" ch re='^([^\]*)\\([0-7][0-7][0-7])(.*)$'
    while [[ $rest =~ $re ]]; do
        printf -v ch "\\${BASH_REMATCH[2]}"
        out+="${BASH_REMATCH[1]}$ch"
        rest=${BASH_REMATCH[3]}
    done
    printf '%s' "$out$rest"
}

# every mount point at or under the canonical root $1, NUL-terminated, the last mounted first (so a mount
# comes before the one it sits on)
arm64_mounts_under() {
    local root=$1 line mnt i found=()
    while IFS= read -r line || [ -n "$line" ]; do
        read -r _ mnt _ <<< "$line"
        [ -n "$mnt" ] || continue
        mnt=$(arm64_decode_mount_field "$mnt")
        if [ "$mnt" = "$root" ] || [[ $mnt == "$root"/* ]]; then
            found+=("$mnt")
        fi
    done < "${AGEGENDER_ARM64_MOUNTS:-/proc/mounts}"
    for (( i=${#found[@]}-1; i>=0; i-- )); do
        printf '%s\0' "${found[i]}"
    done
}

# unmount everything under the canonical root $1 (lazily when busy); 1 if something stays mounted
arm64_unmount_all() {
    local root=$1 m left
    while IFS= read -r -d '' m; do
        umount -- "$m" 2>/dev/null || umount -l -- "$m" 2>/dev/null || arm64_err "could not unmount $m"
    done < <(arm64_mounts_under "$root")
    left=$(arm64_mounts_under "$root" | tr '\0' '\n')
    if [ -n "$left" ]; then
        arm64_err "still mounted under $root:"; printf '%s\n' "$left" >&2
        return 1
    fi
}

# 0 when the canonical root $1 may be deleted: it does not exist, or is an empty folder, or carries a marker
# this script wrote; and nothing is mounted under it
arm64_may_delete_root() {
    local root=$1
    if [ -n "$(arm64_mounts_under "$root" | tr '\0' '\n')" ]; then
        arm64_err "will not delete $root: something is still mounted under it"
        return 1
    fi
    [ -e "$root" ] || [ -L "$root" ] || return 0
    if [ -L "$root" ] || [ ! -d "$root" ]; then
        arm64_err "will not delete $root: not a folder"
        return 1
    fi
    if [ -z "$(ls -A -- "$root")" ] || [ -f "$root/$ARM64_MARKER" ] || [ -f "$root/$ARM64_DONE" ]; then
        return 0
    fi
    arm64_err "will not delete $root: it is not empty and was not made by bench/arm64-check.sh (no $ARM64_MARKER);" \
              "choose another AGEGENDER_ARM64_ROOT or empty it yourself"
    return 1
}

# delete the canonical root $1 if arm64_may_delete_root allows it, never crossing into another file system
arm64_delete_root() {
    arm64_may_delete_root "$1" || return 1
    rm -rf --one-file-system -- "$1"
}

# make the canonical root $1 afresh: delete it (if allowed), create it, mark it as this script's
arm64_fresh_root() {
    arm64_delete_root "$1" || return 1
    mkdir -p -- "$1" && printf 'created by bench/arm64-check.sh; safe to delete\n' > "$1/$ARM64_MARKER"
}
