"""bench/arm64-check.sh's guards: what it may delete and what it unmounts, without root, qemu or debootstrap.

The functions of bench/arm64_guard.sh run in bash against temporary folders and a fake mount table
(AGEGENDER_ARM64_MOUNTS); `umount` is replaced by a shell function that only records its argument.
"""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

GUARD = os.path.join(ROOT, "bench", "arm64_guard.sh")
CHECK = os.path.join(ROOT, "bench", "arm64-check.sh")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("realpath") is None,
                                reason="needs bash and realpath")


def bash(script, *args, mounts=None, cwd=None):
    env = {**os.environ, "AGEGENDER_ARM64_MOUNTS": str(mounts or os.devnull)}
    return subprocess.run(["bash", "-c", f'set -u; . "{GUARD}"; {script}', "guard", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def canonical(path, cwd=None):
    done = bash('arm64_canonical_root "$1"', path, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def location_ok(path, repo=ROOT, cwd=None):
    """(allowed, stderr) of the location check on the path as the script resolves it."""
    done = bash('r=$(arm64_canonical_root "$1") && arm64_check_root_location "$r" "$2"', path, repo, cwd=cwd)
    return done.returncode == 0, done.stderr


def test_the_script_sources_the_guard_and_has_no_bare_rm_of_the_root():
    text = open(CHECK).read()
    assert 'bench/arm64_guard.sh"' in text and 'ROOT=$(arm64_canonical_root "$ROOT")' in text
    assert 'rm -rf "$ROOT"' not in text and "awk -v root" not in text
    assert subprocess.run(["bash", "-n", CHECK]).returncode == 0


@pytest.mark.parametrize("path", ["/", "//", "///", "/work", "/home", "/home/", "/var", "/tmp/", "/./tmp/..//work"])
def test_root_and_top_level_folders_are_refused(path):
    allowed, err = location_ok(path)
    assert not allowed and "top-level" in err and err.count("\n") == 1, err


def test_the_repository_inside_it_and_above_it_are_refused(tmp_path):
    repo = tmp_path / "kit"
    (repo / "bench").mkdir(parents=True)
    for path in (repo, repo / "bench", f"{repo}/", f"{repo}//bench/../", tmp_path, f"{tmp_path}/"):
        allowed, err = location_ok(str(path), repo=str(repo))
        assert not allowed and "repository" in err, (path, err)
    allowed, err = location_ok(str(tmp_path / "arm64"), repo=str(repo))
    assert allowed, err


def test_spellings_of_one_folder_resolve_to_one_canonical_path(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    want = str(real)
    assert canonical(f"{real}/") == want
    assert canonical(f"/{real}") == want                      # //tmp/...
    assert canonical(str(real).replace("/", "//")) == want
    assert canonical(str(link)) == want and canonical(f"{link}/") == want
    assert canonical("real", cwd=tmp_path) == want            # relative to the current folder
    assert canonical("./x/../real/", cwd=tmp_path) == want
    assert bash('arm64_canonical_root ""').returncode == 2


def fake_mounts(tmp_path, mount_points):
    path = tmp_path / "mounts"
    path.write_text("".join(f"dev{i} {m} fstype rw 0 0\n" for i, m in enumerate(mount_points)))
    return path


def mounts_under(root, mounts):
    done = bash('arm64_mounts_under "$1"', root, mounts=mounts)
    assert done.returncode == 0, done.stderr
    return [m for m in done.stdout.split("\0") if m]


def test_mounts_under_the_root_match_exactly_and_come_last_mounted_first(tmp_path):
    root = "/var/cache/agegender arm64"                        # a space: \040 in the mount table
    mounts = fake_mounts(tmp_path, [
        "/", "/proc", "/dev",
        r"/var/cache/agegender\040arm64/proc", r"/var/cache/agegender\040arm64/proc/cpuinfo",
        r"/var/cache/agegender\040arm64/dev", r"/var/cache/agegender\040arm64/dev/pts",
        r"/var/cache/agegender\040arm64-other/dev",               # a sibling that only shares the prefix
        r"/var/cache/agegender\040arm64/tab\011back\134slash",
        "/var/cache/agegender",
    ])
    assert mounts_under(root, mounts) == [
        f"{root}/tab\tback\\slash", f"{root}/dev/pts", f"{root}/dev", f"{root}/proc/cpuinfo", f"{root}/proc"]
    assert mounts_under("/var/cache/agegender", mounts) == ["/var/cache/agegender"]


def test_unmount_all_uses_the_canonical_paths_whatever_the_spelling(tmp_path):
    """The old cleanup matched "$ROOT/" literally: with a trailing slash, // or a symlink nothing matched and
    /proc, /dev stayed mounted. Here every spelling of the root unmounts the same list."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    mounts = fake_mounts(tmp_path, [f"{real}/proc", f"{real}/dev", f"{real}/dev/pts", "/dev"])
    record = tmp_path / "umounted"
    for spelling in (str(real), f"{real}/", str(real).replace("/", "//"), str(tmp_path / "link"), "real"):
        record.unlink(missing_ok=True)
        done = bash(f'umount() {{ printf "%s\\n" "${{@: -1}}" >> "{record}"; }}; '
                    'r=$(arm64_canonical_root "$1") && arm64_unmount_all "$r"', spelling, mounts=mounts,
                    cwd=tmp_path)
        # the fake umount leaves the table as it was: the function must say so, and fail
        assert done.returncode == 1 and "still mounted" in done.stderr
        assert record.read_text().splitlines() == [f"{real}/dev/pts", f"{real}/dev", f"{real}/proc"], spelling


def may_delete(path, mounts=None):
    done = bash('arm64_may_delete_root "$(arm64_canonical_root "$1")"', str(path), mounts=mounts)
    return done.returncode == 0, done.stderr


def test_only_an_empty_or_marked_folder_with_nothing_mounted_may_be_deleted(tmp_path):
    assert may_delete(tmp_path / "absent")[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert may_delete(empty)[0]
    unmarked = tmp_path / "unmarked"
    (unmarked / "etc").mkdir(parents=True)
    (unmarked / "precious.txt").write_text("a user's file")
    allowed, err = may_delete(unmarked)
    assert not allowed and "not empty" in err
    marked = tmp_path / "marked"
    (marked / "etc").mkdir(parents=True)
    (marked / ".agegender-arm64-root").write_text("created by bench/arm64-check.sh")
    assert may_delete(marked)[0]
    assert may_delete(f"{marked}/")[0]
    mounts = fake_mounts(tmp_path, [f"{marked}/dev"])
    allowed, err = may_delete(marked, mounts)
    assert not allowed and "mounted" in err
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert not may_delete(afile)[0]


def test_fresh_root_deletes_a_marked_root_and_keeps_an_unmarked_one(tmp_path):
    marked = tmp_path / "marked"
    (marked / "usr").mkdir(parents=True)
    (marked / ".agegender-arm64-root").write_text("x")
    (marked / "usr" / "stale").write_text("from a failed build")
    done = bash('arm64_fresh_root "$(arm64_canonical_root "$1")"', f"{marked}//")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(marked)) == [".agegender-arm64-root"]

    unmarked = tmp_path / "home"
    unmarked.mkdir()
    (unmarked / "thesis.tex").write_text("years of work")
    done = bash('arm64_fresh_root "$(arm64_canonical_root "$1")"', str(unmarked))
    assert done.returncode == 1 and (unmarked / "thesis.tex").read_text() == "years of work"
    assert not (unmarked / ".agegender-arm64-root").exists()


def test_delete_never_follows_a_symlink_out_of_the_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    root = tmp_path / "root"
    root.mkdir()
    (root / ".agegender-arm64-root").write_text("x")
    (root / "dev").symlink_to(outside)
    done = bash('arm64_delete_root "$(arm64_canonical_root "$1")"', str(root))
    assert done.returncode == 0 and not root.exists() and (outside / "keep").exists()
