"""Face alignment: the similarity fit, chip sampling, dlib's template, and the end-to-end claim that
detecting and re-aligning a UTKFace chip placed in a larger photo gives back the chip and its estimates.
"""
import numpy as np
import pytest

from agegender import Estimator, align, read_image
from agegender_testdata import needs_detector, random_chips, scene_with_chip, utkface_chips


def rotation(angle_deg, scale, shift):
    a = np.deg2rad(angle_deg)
    m = np.zeros((2, 3))
    m[:, :2] = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m[:, 2] = shift
    return m


@pytest.mark.parametrize("angle, scale, shift", [(0, 1, (0, 0)), (30, 2.5, (10, -4)), (-170, 0.3, (100, 7))])
def test_similarity_transform_recovers_a_known_map(angle, scale, shift):
    m = rotation(angle, scale, shift)
    src = np.random.default_rng(0).random((5, 2)) * 200
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(align.similarity_transform(src, dst), m, atol=1e-9)


def test_similarity_transform_rejects_degenerate_points():
    with pytest.raises(ValueError):
        align.similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        align.similarity_transform(np.ones((5, 2)), np.zeros((4, 2)))


def test_template_is_dlibs_at_size_200_padding_0_2():
    points = align.template_points()
    # dlib: p = (padding + template) / (2 * padding + 1) * size; eye centres ~61 and ~136 px, nose ~118 px down
    np.testing.assert_allclose(points[4], [(0.2 + 0.4901123135679) / 1.4 * 200, (0.2 + 0.6277975316475) / 1.4 * 200])
    eyes = (points[0] + points[1]) / 2, (points[2] + points[3]) / 2
    assert 134 < eyes[0][0] < 138 and 59 < eyes[1][0] < 63 and 59 < eyes[0][1] < 62


def test_extract_chip_identity_and_quarter_turn():
    image = random_chips(1, size=200, seed=1)[0]
    identity = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_array_equal(align.extract_chip(image, identity), image)
    quarter = np.array([[0, -1.0, 199], [1.0, 0, 0]])          # chip (x, y) <- photo (199 - y, x)
    np.testing.assert_array_equal(align.extract_chip(image, quarter), np.rot90(image, 1))


def test_extract_chip_averages_when_shrinking_and_is_black_outside():
    stripes = np.zeros((800, 800, 3), np.uint8)
    stripes[:, ::2] = 255                                        # 1-pixel stripes alias without averaging
    chip = align.extract_chip(stripes, np.array([[4.0, 0, 0], [0, 4.0, 0]]))
    assert abs(chip[5:-5, 5:-5].astype(float).mean() - 127.5) < 2 and chip[5:-5, 5:-5].std() < 3
    far = align.extract_chip(stripes, np.array([[1.0, 0, 5000], [0, 1.0, 5000]]), size=20)
    far_shrunk = align.extract_chip(stripes, np.array([[8.0, 0, 9000], [0, 8.0, 9000]]), size=20)
    assert not far.any() and not far_shrunk.any()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_a_chip_over_the_photos_top_left_corner_is_cut_from_the_photo_padded_with_black(k):
    """A chip whose source area starts 3 chip pixels left of and 2 above the photo, at 1, 2 and 4 photo pixels a
    chip pixel (2 and 4 average k x k blocks first). Chip pixel (x, y) covers photo pixels k (x - 3) .. k (x - 3)
    + k - 1 across, so the chip is the k x k block means of the photo padded with 3 k black columns on the left and
    2 k black rows on top: computed here on the padded photo, without the chip code."""
    photo = np.random.default_rng(k).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    size, left, top = 12, 3, 2
    centre = (k - 1) / 2                          # the centre of a k x k block, in photo pixels from its corner
    chip_to_photo = np.array([[k, 0, centre - k * left], [0, k, centre - k * top]], np.float64)
    padded = np.zeros((64 + k * top, 48 + k * left, 3), np.float64)
    padded[k * top:, k * left:] = photo
    blocks = padded[:k * size, :k * size].reshape(size, k, size, k, 3).mean(axis=(1, 3))
    expected = np.round(blocks).astype(np.uint8)
    chip = align.extract_chip(photo, chip_to_photo, size=size)
    np.testing.assert_array_equal(chip, expected)
    assert not chip[:top].any() and not chip[:, :left].any() and chip[top:, left:].any()


def test_the_landmark_crop_is_clipped_to_the_photo_at_every_edge():
    """detect._span: [start, stop) clipped to [0, size) and at least one pixel wide, for spans inside, across an
    edge and wholly outside the photo (a box past the right or bottom edge keeps the last pixel, one past the
    left or top edge the first)."""
    from agegender import detect

    size = 50
    for start in range(-30, 90, 3):
        for stop in range(start + 1, start + 45, 4):
            got = detect._span(start, stop, size)
            inside = (max(start, 0), min(stop, size))
            if inside[0] < inside[1]:
                expected = inside
            else:
                expected = (size - 1, size) if start >= size else (0, 1)
            assert got == expected, (start, stop)

def test_utkface_chips_sit_on_dlibs_template():
    """dlib's 5 landmarks on UTKFace chips (padded into a bigger frame) average within 3 px of the template."""
    needs_detector()
    from agegender import detect

    detector = detect.FaceDetector()
    offsets = []
    for path in utkface_chips(20):
        chip = read_image(path)
        frame = np.zeros((400, 400, 3), np.uint8)
        frame[100:300, 100:300] = chip
        found = detector(frame)
        if found:
            offsets.append(found[0].landmarks - 100 - align.template_points())
    assert len(offsets) >= 17, f"only {len(offsets)} of 20 chips found"
    mean = np.mean(offsets, axis=0)
    assert np.abs(mean).max() < 3.0, f"mean landmark offset from the template (px):\n{mean.round(2)}"


def test_detected_and_realigned_chips_keep_their_estimates(reference_model_path):
    """UTKFace chips pasted into 640 x 480 photos (shifted, scaled 0.7-1.6x, rotated -15..10 deg), found and
    aligned again, change the estimates far less than a different face does, and less than a plain box crop."""
    needs_detector()
    from PIL import Image

    estimator = Estimator(reference_model_path)
    originals, realigned, box_crops = [], [], []
    for i, path in enumerate(utkface_chips(30)):
        chip = read_image(path)
        scene = scene_with_chip(chip, scale=(0.7, 1.0, 1.6)[i % 3], angle=(-15, 0, 10)[(i // 3) % 3], seed=i)
        found = estimator.find_faces(scene)
        if not found:
            continue
        detection, new_chip = found[0]
        originals.append(chip)
        realigned.append(new_chip)
        left, top, right, bottom = detection.box
        margin = (right - left) // 4
        box = Image.fromarray(scene).crop((left - margin, top - margin, right + margin, bottom + margin))
        box_crops.append(np.asarray(box.resize((200, 200), Image.BILINEAR)))
    assert len(originals) >= 27, f"faces found in only {len(originals)} of 30 photos"
    a, b, c = (estimator.estimate(chips) for chips in (originals, realigned, box_crops))
    n = len(originals)
    for name in ("age", "gender"):
        same_face = np.median(np.abs(a[name] - b[name]))
        box_crop = np.median(np.abs(a[name] - c[name]))
        other_faces = np.median(np.abs(a[name][:, None] - a[name][None, :])[~np.eye(n, dtype=bool)])
        report = f"{name}: re-aligned {same_face:.4g}, box crop {box_crop:.4g}, other faces {other_faces:.4g}"
        assert same_face < 0.4 * other_faces, report
        assert same_face < 0.75 * box_crop, report
    pixels = np.median([np.abs(o[50:150, 50:150].astype(int) - r[50:150, 50:150]).mean()
                        for o, r in zip(originals, realigned)])
    assert pixels < 16, f"median mean-absolute pixel difference in the chip centre: {pixels:.1f}"


def test_exif_rotated_gray_and_cmyk_photos_find_the_same_face(tmp_path):
    """A photo stored sideways with an EXIF orientation, or as grayscale or CMYK JPEG, finds the face where the
    upright RGB photo has it (box within a few pixels: JPEG and colour conversion move dlib's HOG a little)."""
    needs_detector()
    import io

    from PIL import Image

    scene = scene_with_chip(read_image(utkface_chips(1, offset=70)[0]), scale=1.1, angle=0, seed=9)
    estimator = Estimator.from_model(_ConstantModel())
    upright = estimator.predict(scene)
    assert len(upright) == 1

    def jpeg(image, **options):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=95, **options)
        return buffer.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6                                   # stored turned 90 deg counter-clockwise: show rotated cw
    variants = {
        "exif": jpeg(Image.fromarray(np.ascontiguousarray(np.rot90(scene, 1))), exif=exif.tobytes()),
        "gray": jpeg(Image.fromarray(scene).convert("L")),
        "cmyk": jpeg(Image.fromarray(scene).convert("CMYK")),
    }
    for name, data in variants.items():
        faces = estimator.predict(data)
        assert len(faces) == 1, name
        assert np.abs(np.subtract(faces[0].box, upright[0].box)).max() <= 8, (name, faces[0].box, upright[0].box)


def _canvas(chips_at, width, height, background=110):
    """A gray photo with each (uint8 chip, scale, (left, top)) pasted in, resized by PIL (independent of align.py)."""
    from PIL import Image

    canvas = Image.new("RGB", (width, height), (background,) * 3)
    for chip, scale, corner in chips_at:
        size = int(round(chip.shape[0] * scale))
        canvas.paste(Image.fromarray(chip).resize((size, size), Image.BILINEAR), corner)
    return np.asarray(canvas)


def test_a_photo_with_two_faces_gives_each_face_as_it_gives_it_alone():
    """Two UTKFace chips side by side: two faces, a box around each, and each face's chip, box and age as in
    the same photo with only that face.

    Bound: the faces are 580 px apart, more than the HOG window and the landmark crop (the box and one box
    size around it) reach, so each face's detection and chip see the same pixels with or without the
    other face: the chips must be identical. The network then runs a batch of 2 against a batch of 1:
    the same float32 arithmetic per image summed in another order, a relative 1e-5 at most.
    """
    needs_detector()
    chips = [read_image(path) for path in utkface_chips(2, offset=30, step=211)]
    corners = [(60, 80), (640, 80)]
    pair = _canvas([(chips[0], 1.3, corners[0]), (chips[1], 1.3, corners[1])], 1000, 420)
    estimator = Estimator()
    faces = estimator.predict(pair)
    assert len(faces) == 2, f"{len(faces)} faces found in the two-face photo"
    faces.sort(key=lambda f: f.box[0])
    for face, (left, top) in zip(faces, corners):
        centre = (left + 130, top + 130)                                 # the pasted chip's centre (260 px chip)
        assert face.box[0] < centre[0] < face.box[2] and face.box[1] < centre[1] < face.box[3], face.box
    for i, face in enumerate(faces):
        alone = estimator.predict(_canvas([(chips[i], 1.3, corners[i])], 1000, 420))
        assert len(alone) == 1
        assert alone[0].box == face.box
        np.testing.assert_array_equal(alone[0].chip, face.chip)
        np.testing.assert_allclose(face.age, alone[0].age, rtol=1e-5)
        np.testing.assert_allclose(face.male_probability, alone[0].male_probability, rtol=0, atol=1e-5)


def test_a_face_larger_than_the_landmark_limit_is_measured_on_an_averaged_crop(monkeypatch):
    """A face box wider than LANDMARK_MAX_SIDE (a UTKFace chip pasted at 12x, a box of about 1300 px) gets its
    landmarks on a crop averaged over 2 x 2 blocks. Measured in chip pixels (photo pixels / the chip's scale),
    they stay within 1 on average and 2 at most of the landmarks found at full resolution: the spread of
    dlib's own landmarks around the template on UTKFace chips (1.5 px, align.py). The chips then differ by a
    few gray levels in the mean, against tens between different faces."""
    needs_detector()
    from agegender import detect

    chip = read_image(utkface_chips(1, offset=70)[0])
    photo = _canvas([(chip, 12, (100, 100))], 2600, 2600)
    averaged = Estimator.from_model(_ConstantModel()).find_faces(photo)
    monkeypatch.setattr(detect, "LANDMARK_MAX_SIDE", 10 ** 6)
    full = Estimator.from_model(_ConstantModel()).find_faces(photo)
    assert len(averaged) == len(full) == 1
    (face, face_chip), (full_face, full_chip) = averaged[0], full[0]
    assert max(face.box[2] - face.box[0], face.box[3] - face.box[1]) + 1 > 1024, face.box
    scale = np.sqrt(abs(np.linalg.det(align.chip_transform(full_face.landmarks)[:, :2])))   # photo px per chip px
    offsets = np.hypot(*(face.landmarks - full_face.landmarks).T) / scale
    assert offsets.mean() <= 1 and offsets.max() <= 2, f"landmark offsets in chip pixels: {offsets.round(2)}"
    difference = np.abs(face_chip.astype(int) - full_chip).mean()
    assert difference < 4, f"mean absolute chip difference {difference:.2f} gray levels"


class _ConstantModel:
    thread_safe = True

    def forward(self, x):
        from refimpl.spec import OUTPUT_NAMES
        return {name: np.full((len(x), 1), 0.5, np.float32) for name in OUTPUT_NAMES}
