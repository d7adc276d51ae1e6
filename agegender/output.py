"""Result rows -> a readable table, JSON or CSV. A row is one face, or one photo where no face was found.

File names are written by escape_name in every format (and in messages on stderr), so a name
that is not UTF-8 or holds a newline can neither break a row nor stop the run.
"""
import csv
import json
import os
import re

from .estimator import HEADS

_ESCAPE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\udc80-\udcff]")
_UNESCAPE = re.compile(r"\\(?:\\|x([0-9a-fA-F]{2}))")


def escape_name(path):
    """A file name as printable UTF-8 text, reversibly (unescape_name undoes it).

    Each byte that is not part of valid UTF-8, and each byte of a control character (newline,
    tab, ...; U+0000-U+001F, U+007F-U+009F), becomes \\xHH (its hex value); a backslash becomes \\\\.
    Every other name is written unchanged.
    """
    text = os.fsdecode(path)
    if text.isprintable() and "\\" not in text:
        return text
    return _ESCAPE.sub(_escape_one, text)


def _escape_one(match):
    char = match.group()
    if char == "\\":
        return "\\\\"
    raw = os.fsencode(char)             # a lone surrogate is the byte the file system gave; else UTF-8
    return "".join(f"\\x{byte:02x}" for byte in raw)


def unescape_name(text):
    """escape_name's text -> the file name (str, with surrogate escapes where it is not UTF-8)."""
    if "\\" not in text:
        return text
    out, last = bytearray(), 0
    for match in _UNESCAPE.finditer(text):
        out += os.fsencode(text[last:match.start()])
        out += b"\\" if match.group(1) is None else bytes([int(match.group(1), 16)])
        last = match.end()
    out += os.fsencode(text[last:])
    return os.fsdecode(bytes(out))


def face_row(file, index, face, heads=False):
    """The dict one face becomes in --json and --csv: file, face (0-based), box, age, gender, P(male), score."""
    row = {"file": escape_name(file), "face": index}
    row.update(face.to_dict(heads=heads))
    return row


class TableWriter:
    """Aligned columns, written as results arrive; 'no face found' rows in the face column."""

    def __init__(self, stream, heads=False):
        self.stream, self.heads, self.header_done = stream, heads, False

    def _line(self, cells):
        widths = (28, 5, 22, 6, 7, 7, 6) + tuple(len(h) for h in HEADS)
        text = "  ".join(str(c).ljust(w) if i < len(cells) - 1 else str(c)
                         for i, (c, w) in enumerate(zip(cells, widths)))
        self.stream.write(text.rstrip() + "\n")

    def header(self):
        if not self.header_done:
            cells = ["file", "face", "box", "age", "gender", "P(male)", "score"] + (list(HEADS) if self.heads else [])
            self._line(cells)
            self.header_done = True

    def faces(self, file, rows):
        self.header()
        for row in rows:
            cells = [row["file"], row["face"], "({}, {}, {}, {})".format(*row["box"]), f"{row['age']:.1f}",
                     row["gender"], f"{row['male_probability']:.2f}",
                     "-" if row["score"] is None else f"{row['score']:.2f}"]
            cells += [f"{row[h]:.3f}" for h in HEADS] if self.heads else []
            self._line(cells)
        self.stream.flush()

    def no_face(self, file):
        self.header()
        self._line([escape_name(file), "-", "no face found"])
        self.stream.flush()

    def close(self):
        pass


class JsonWriter:
    """A JSON list of face objects, one per line, written as they come; photos without a face are not in it."""

    def __init__(self, stream, heads=False):
        self.stream, self.started = stream, False

    def faces(self, file, rows):
        for row in rows:
            self.stream.write((",\n  " if self.started else "[\n  ") + json.dumps(row))
            self.started = True
        self.stream.flush()

    def no_face(self, file):
        pass

    def close(self):
        self.stream.write("\n]\n" if self.started else "[]\n")
        self.stream.flush()


class CsvWriter:
    """CSV with a header; the box as columns left, top, right, bottom; a photo without a face: a row, face empty."""

    def __init__(self, stream, heads=False):
        self.columns = ["file", "face", "left", "top", "right", "bottom", "age", "gender", "male_probability",
                        "score"] + (list(HEADS) if heads else [])
        self.writer = csv.DictWriter(stream, self.columns, lineterminator="\n", extrasaction="ignore")
        self.writer.writeheader()
        self.stream = stream

    def faces(self, file, rows):
        for row in rows:
            flat = dict(row)
            flat.update(zip(("left", "top", "right", "bottom"), row["box"]))
            self.writer.writerow(flat)
        self.stream.flush()

    def no_face(self, file):
        self.writer.writerow({"file": escape_name(file)})

    def close(self):
        self.stream.flush()


WRITERS = {"table": TableWriter, "json": JsonWriter, "csv": CsvWriter}
