"""Small image folders for the image task's tests, written as a user's would be: PNG, JPEG and BMP files,
grey, palette, RGB and RGBA, of several sizes, in the ImageFolder layout. Each class is a colour, so that a
few steps learn something."""

from __future__ import annotations

from pathlib import Path

# the image script's options for a tiny, quick run: 16x16 images, the narrowest ResNet, no worker processes
TINY_IMAGES = ["--image-size", "16", "--width", "8", "--batch-size", "4", "--num-workers", "0"]
COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}


def make_images(root: Path, per_class: int = 8, val: int = 3) -> Path:
    """root/train/<class>/ with per_class images each and root/val/<class>/ with val each (none: no val/)."""
    from PIL import Image, ImageDraw

    for split, count in (("train", per_class), ("val", val)) if val else (("train", per_class),):
        for c, (name, colour) in enumerate(COLOURS.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = (12 + 3 * (i % 3), 12 + 2 * (i % 2))
                image = Image.new("RGB", size, tuple(60 + 20 * ((i + k) % 5) for k in range(3)))
                ImageDraw.Draw(image).rectangle((2 + i % 3, 2, 8 + i % 4, 9), fill=colour)
                kind = (i + c) % 4
                if kind == 0:
                    image.save(folder / f"{i:02d}.png")
                elif kind == 1:
                    image.convert("L").save(folder / f"{i:02d}.png")  # grey
                elif kind == 2:
                    image.convert("RGBA").save(folder / f"{i:02d}.png")
                else:
                    image.save(folder / f"{i:02d}.jpg" if i % 2 else folder / f"{i:02d}.bmp")
    return root
