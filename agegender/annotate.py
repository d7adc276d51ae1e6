"""--annotate: a copy of the photo with each face's box and an 'age gender' label (needs pillow)."""
import numpy as np


def annotate(rgb, faces):
    """uint8 RGB [H, W, 3] and Faces -> PIL image with boxes and labels drawn."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(np.asarray(rgb))
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 300))
    font_size = max(12, round(max(image.size) / 40))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:                                  # Pillow < 10.1 has one fixed-size default font
        font = ImageFont.load_default()
    for face in faces:
        colour = (40, 120, 255) if face.gender == "male" else (255, 60, 120)
        left, top, right, bottom = face.box
        draw.rectangle((left, top, right, bottom), outline=colour, width=width)
        label = f"{face.age:.0f} {face.gender[0].upper()} {face.male_probability:.2f}"
        text_box = draw.textbbox((left, top), label, font=font)
        height = text_box[3] - text_box[1] + 2 * width
        y = top - height if top - height >= 0 else bottom + 1
        draw.rectangle((left, y, left + text_box[2] - text_box[0] + 2 * width, y + height), fill=colour)
        draw.text((left + width, y + width - (text_box[1] - top)), label, fill=(255, 255, 255), font=font)
    return image
