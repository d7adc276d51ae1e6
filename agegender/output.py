"""Result rows -> a readable table, JSON or CSV. A row is one face, or one photo where no face was found."""
import csv
import json

from .estimator import HEADS

def face_row(file, index, face, heads=False):
    """The dict one face becomes in --json and --csv: file, face (0-based), box, age, gender, P(male), score."""
    row = {"file": file, "face": index}
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
            cells = [file, row["face"], "({}, {}, {}, {})".format(*row["box"]), f"{row['age']:.1f}",
                     row["gender"], f"{row['male_probability']:.2f}",
                     "-" if row["score"] is None else f"{row['score']:.2f}"]
            cells += [f"{row[h]:.3f}" for h in HEADS] if self.heads else []
            self._line(cells)
        self.stream.flush()

    def no_face(self, file):
        self.header()
        self._line([file, "-", "no face found"])
        self.stream.flush()

    def close(self):
        pass


class JsonWriter:
    """A JSON list of face objects, one per line, written at the end; photos without a face are not in it."""

    def __init__(self, stream, heads=False):
        self.stream, self.rows = stream, []

    def faces(self, file, rows):
        self.rows.extend(rows)

    def no_face(self, file):
        pass

    def close(self):
        lines = ",\n".join("  " + json.dumps(row) for row in self.rows)
        self.stream.write(f"[\n{lines}\n]\n" if self.rows else "[]\n")
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
        self.writer.writerow({"file": file})

    def close(self):
        self.stream.flush()


WRITERS = {"table": TableWriter, "json": JsonWriter, "csv": CsvWriter}
