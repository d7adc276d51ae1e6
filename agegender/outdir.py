"""Output folders of --annotate and --save-chips: one file per photo (and per face), never replacing anything.

Names mirror the inputs below their common folder (the folder argument, or the deepest folder
that holds every input) and keep the input's whole name, extension included:

    photos/a/x.jpg  ->  DIR/a/x.jpg.annotated.png    (--annotate DIR)
                        DIR/a/x.jpg.face0.png        (--save-chips DIR; face 0 is the largest)

so a/x.jpg and b/x.jpg, or x.jpg and x.png, never share an output, and no output name is an
image name the scan of an input folder would confuse with its photo. Each file is written
under a temporary name (.NAME.XXXXXXXX.part) in its final folder, flushed to disk, then
hard-linked to its name, which fails on any existing entry (a file, a folder, a symbolic
link, dangling or not): an existing name is kept and counted, never written through.
--overwrite renames over the existing entry instead (a symbolic link there is replaced, not
followed), except an input of the run, which is never replaced. Subfolders below DIR are
opened without following symbolic links (openat with O_NOFOLLOW), so a link planted inside
DIR cannot send outputs elsewhere. An interrupted run leaves at most .part files (safe to
delete); running it again writes what is missing and keeps what was finished.
"""
import errno
import os
import re
import secrets
import stat

ANNOTATED_SUFFIX = ".annotated.png"
CHIP_SUFFIX = ".face{}.png"
_OWN_OUTPUT = {"annotate": re.compile(r"\.annotated\.png\Z"), "chips": re.compile(r"\.face\d+\.png\Z")}
_TEMP_NAME_BYTES = 150                   # of the name in a temporary name: 255-byte names leave room for the rest

# os.replace takes src_dir_fd/dst_dir_fd wherever os.rename does, but only os.rename is listed in supports_dir_fd
# (a set of os.replace was never a subset: every write took the plain-path fallback)
_AT_FDS = {os.open, os.mkdir, os.link, os.rename, os.unlink, os.stat} <= os.supports_dir_fd


class OutputFolderError(OSError):
    """The output folder itself cannot be used (not a folder, not creatable): a setup error for the whole run."""


def common_root(inputs):
    """[(file, scanned folder or None)] -> the deepest folder holding every input (absolute), or None."""
    bases = {os.path.abspath(root) if root else os.path.dirname(os.path.abspath(file)) for file, root in inputs}
    if not bases:
        return None
    try:
        return os.path.commonpath(list(bases))
    except ValueError:                                    # paths on different drives (Windows)
        return None


def is_own_output(kind, path, folder):
    """Whether `path` (found by a folder scan) is a file an earlier run wrote to `folder` as `kind`."""
    if not _OWN_OUTPUT[kind].search(path):
        return False
    here = os.path.abspath(folder)
    return os.path.abspath(path).startswith(here.rstrip(os.sep) + os.sep)


class OutputFolder:
    """One --annotate or --save-chips folder: counts what it wrote and what it kept."""

    def __init__(self, folder, root, overwrite=False, inputs=()):
        self.folder, self.root, self.overwrite = folder, root, overwrite
        self.written, self.kept, self.first_kept = 0, 0, None
        self._done = set()                                 # names written by this run (an input given twice)
        self._inputs = set()
        if overwrite:                                      # the entries --overwrite must never rename over
            for file, _ in inputs:
                try:
                    info = os.lstat(file)
                    self._inputs.add((info.st_dev, info.st_ino))
                except OSError:
                    pass
        try:
            os.makedirs(folder, exist_ok=True)
        except FileExistsError:
            raise OutputFolderError(f"{folder}: exists and is not a folder") from None
        except OSError as exc:
            raise OutputFolderError(f"{folder}: cannot create the output folder ({exc.strerror})") from None

    def fresh_copy(self):
        """The same folder, root and inputs with nothing counted: for one task of a run split over processes."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__, written=0, kept=0, first_kept=None, _done=set())
        return copy

    def relative(self, file):
        """The input's path below the common root (its name alone when there is none)."""
        path = os.path.abspath(file)
        if self.root is None:
            return os.path.splitdrive(path)[1].lstrip(os.sep) or os.path.basename(path)
        return os.path.relpath(path, self.root)

    def path_for(self, file, suffix):
        return os.path.join(self.folder, self.relative(file) + suffix)

    def save(self, file, suffix, image):
        """Write PIL `image` as PNG for input `file`; -> 'written', 'kept' (an entry already there) or 'again'."""
        relative = self.relative(file) + suffix
        if relative in self._done:
            return "again"
        parts = relative.split(os.sep)
        folder_fd = self._open_folder(parts[:-1])
        try:
            state = self._write(folder_fd, parts[-1] if _AT_FDS else self.path_for(file, suffix), image)
        finally:
            if folder_fd is not None:
                os.close(folder_fd)
        if state == "written":
            self.written += 1
            self._done.add(relative)
        else:
            self.kept += 1
            self.first_kept = self.first_kept or self.path_for(file, suffix)
        return state

    def _open_folder(self, parts):
        """Create and open the subfolders below the output folder, never following a symbolic link."""
        if not _AT_FDS:                                    # no openat here: plain paths, links refused by lstat
            path = self.folder
            for part in parts:
                path = os.path.join(path, part)
                try:
                    os.mkdir(path)
                except FileExistsError:
                    pass
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a folder (or a symbolic link)", path)
            return None
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            for part in parts:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    child = os.open(part, flags, dir_fd=fd)
                except OSError as exc:                      # ELOOP: a symbolic link; ENOTDIR: a file
                    raise OSError(exc.errno, "not a folder (a symbolic link or a file is in the way)",
                                  os.path.join(self.folder, *parts[:parts.index(part) + 1])) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _write(self, dir_fd, name, image):
        if not self.overwrite and _exists(name, dir_fd):
            return "kept"
        temp, fd = _create_temp(name, dir_fd)
        try:
            with os.fdopen(fd, "wb") as stream:
                image.save(stream, format="PNG")
                stream.flush()
                os.fsync(stream.fileno())
            if self.overwrite:
                if self._is_input(name, dir_fd):
                    raise OSError(errno.EEXIST, "would replace an input of this run", name)
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                return "written"
            try:
                os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                return "kept"
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                    raise
                return _claim_then_replace(temp, name, dir_fd)    # a file system without hard links
            return "written"
        finally:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass

    def _is_input(self, name, dir_fd):
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (info.st_dev, info.st_ino) in self._inputs

    def summary(self, what):
        """One line for stderr: how many files this run wrote, and how many it found there and kept."""
        line = f"agegender: {what}: wrote {self.written} file{'s' * (self.written != 1)} to {self.folder}"
        if self.kept:
            line += (f"; kept {self.kept} that already existed (--overwrite replaces them), "
                     f"e.g. {self.first_kept}")
        return line


def _exists(name, dir_fd):
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _create_temp(name, dir_fd):
    """A new file .NAME.XXXXXXXX.part beside `name` (O_EXCL: never an existing entry or link) -> (its name, fd)."""
    head, base = os.path.split(name)
    base = os.fsdecode(os.fsencode(base)[:_TEMP_NAME_BYTES])
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp = os.path.join(head, f".{base}.{secrets.token_hex(4)}.part")
        try:
            return temp, os.open(temp, flags, 0o666, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", name)


def _claim_then_replace(temp, name, dir_fd):
    """Without hard links: reserve the name with O_EXCL (fails on any entry), then rename the full file onto it."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666, dir_fd=dir_fd)
    except FileExistsError:
        return "kept"
    os.close(fd)
    os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return "written"
