"""The built-in synthetic task: glyph images generated on the fly (:func:`make_synthetic`).

Each image shows copies of its class's glyph (two strokes that meet in a class-specific way) among
distractor strokes, on a random background colour with pixel noise. The generator is a pure
function of its arguments and ``seed``. Its knobs (``glyph_scale``, ``polarity``, ``field``) make
the task's variants; their defaults are the shipped task.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from nas.data.imagedata import ImageData
from nas.errors import UserError

__all__ = ["SYNTHETIC_GLYPHS", "POLARITIES", "make_synthetic"]


#: The synthetic task's glyphs on a 7 x 7 grid: "1" and "2" mark the glyph's two strokes, which are
#: coloured independently. Class ``k`` is glyph ``k``. Every glyph is built from the same parts (short
#: strokes one grid cell wide, also used for the distractors); the classes differ only in how two strokes meet:
#: crossing, touching at an end or the middle, or missing each other by one grid cell (a cell is drawn glyph_scale x glyph_scale pixels, 2 x 2 by default).
SYNTHETIC_GLYPHS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("plus", (".......", "...2...", "...2...", ".11111.", "...2...", "...2...", ".......")),
    ("corner", (".......", ".1.....", ".1.....", ".1.....", ".1.....", ".12222.", ".......")),
    ("tee", (".......", ".11111.", "...2...", "...2...", "...2...", "...2...", ".......")),
    ("parallel-1", (".......", ".......", ".11111.", ".......", ".22222.", ".......", ".......")),
    ("cross-diagonal", (".......", ".1...2.", "..1.2..", "...1...", "..2.1..", ".2...1.", ".......")),
    ("vee", (".......", ".1...2.", "..1.2..", "...1...", ".......", ".......", ".......")),
    ("tee-gap", (".......", ".11111.", ".......", "...2...", "...2...", "...2...", ".......")),
    ("broken-line", (".......", ".......", ".......", "111.222", ".......", ".......", ".......")),
    ("corner-gap", (".......", ".1.....", ".1.....", ".1.....", ".1.....", ".1.222.", ".......")),
    ("parallel-2", (".......", ".11111.", ".......", ".......", ".22222.", ".......", ".......")),
)

_GLYPH = 7  # the glyphs' design grid (above)
_SCALE = 2  # default glyph_scale: each grid cell drawn as a 2 x 2 block, 2-pixel strokes and gaps, 14 x 14 glyphs

#: The stroke polarities :func:`make_synthetic` accepts: ``"light"`` (every stroke lighter than
#: the background in every channel) or ``"either"`` (lighter or darker, at random per stroke and channel).
POLARITIES: tuple[str, ...] = ("light", "either")


def _upscale(masks: np.ndarray, scale: int) -> np.ndarray:
    return masks.repeat(scale, axis=-2).repeat(scale, axis=-1)


def _glyph_bank(num_classes: int, scale: int = _SCALE) -> np.ndarray:
    """int8 num_classes x 8 x 14 x 14 (at scale 2): each glyph in its 8 orientations (rotations, mirror images)."""
    bank = np.zeros((num_classes, 8, _GLYPH, _GLYPH), np.int8)
    for k, (_, rows) in enumerate(SYNTHETIC_GLYPHS[:num_classes]):
        g = np.array([[".12".index(ch) for ch in row] for row in rows], np.int8)
        for r in range(4):
            bank[k, r] = np.rot90(g, r)
            bank[k, 4 + r] = np.rot90(g.T, r)
    return _upscale(bank, scale)


def _stroke_bank(scale: int = _SCALE) -> np.ndarray:
    """int8 16 x 14 x 14 (at scale 2): single straight strokes of length 2..5 cells, horizontal, vertical and diagonal."""
    out = []
    for length in (2, 3, 4, 5):
        for dy, dx, x0 in ((0, 1, 0), (1, 0, 0), (1, 1, 0), (1, -1, _GLYPH - 1)):
            m = np.zeros((_GLYPH, _GLYPH), np.int8)
            for i in range(length):
                m[i * dy, x0 + i * dx] = 1
            out.append(m)
    return _upscale(np.stack(out), scale)


def _synthetic_images(
    num: int,
    size: int,
    num_classes: int,
    rng: np.random.Generator,
    *,
    scale: int = _SCALE,
    light: bool = True,
    field: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``num`` images (uint8 N x 3 x size x size) and balanced labels of the glyph task.

    The keywords are :func:`make_synthetic`'s knobs (unchecked here): ``scale`` pixels per grid
    cell (its ``glyph_scale``), strokes lighter than the background (``light``, its
    ``polarity="light"``) or of random polarity per channel, and the std of a smooth colour field
    on the background (``field``; 0: none).
    """
    labels = rng.permutation(np.arange(num) % num_classes)
    glyphs = _glyph_bank(num_classes, scale)
    strokes = _stroke_bank(scale)
    glyph_px = _GLYPH * scale
    base = rng.uniform(0.2, 0.8, (num, 3, 1, 1)).astype(np.float32)  # a random background colour per image
    img = np.repeat(np.repeat(base, size, axis=2), size, axis=3)  # N x 3 x size x size
    if field > 0:  # plus a smooth random colour field: bilinear upsampling of 4 x 4 normal values
        coarse = rng.normal(0.0, field, (num, 3, 4, 4)).astype(np.float32)
        pos = np.clip((np.arange(size) + 0.5) * 4 / size - 0.5, 0, 3)
        lo = np.minimum(pos.astype(int), 2)
        up = np.zeros((size, 4), np.float32)
        up[np.arange(size), lo] = 1 - (pos - lo)
        up[np.arange(size), lo + 1] = pos - lo
        img += up @ coarse @ up.T

    def stamp(masks: np.ndarray) -> None:
        """Draw one glyph per image (an all-zero mask draws nothing) at a random place, strokes in random colours."""
        y0 = rng.integers(0, size - glyph_px + 1, num)
        x0 = rng.integers(0, size - glyph_px + 1, num)
        # each stroke its own colour, lighter than the background in every channel (or either way)
        delta = rng.uniform(0.35, 0.7, (num, 2, 3)).astype(np.float32)
        if not light:
            delta *= rng.choice(np.array([-1.0, 1.0], np.float32), (num, 2, 3))
        colour = np.clip(base[:, None, :, 0, 0] + delta, 0, 1)
        i, dy, dx = np.nonzero(masks)
        img[i, :, y0[i] + dy, x0[i] + dx] = colour[i, masks[i, dy, dx] - 1]

    n_glyphs = rng.integers(2, 5, num)  # 2..4 copies of the class glyph
    n_strokes = rng.integers(1, 5, num)  # 1..4 distractor strokes
    for r in range(4):
        stamp(strokes[rng.integers(0, len(strokes), num)] * (r < n_strokes)[:, None, None])
        stamp(glyphs[labels, rng.integers(0, 8, num)] * (r < n_glyphs)[:, None, None])
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.04)  # pixel noise
    img *= 255
    img += 0.5
    out = np.clip(img, 0, 255, out=img).astype(np.uint8)
    return out, labels.astype(np.int64)


def _check_knobs(glyph_scale: int, polarity: str, field: float) -> None:
    """Raise ``ValueError`` naming the first of the generator's knobs that has a bad value."""
    if isinstance(glyph_scale, bool) or not isinstance(glyph_scale, numbers.Integral) or int(glyph_scale) < 1:
        raise ValueError(
            f"glyph_scale must be a whole number of pixels per glyph grid cell, at least 1, got {glyph_scale!r} "
            f"(the shipped task uses {_SCALE})"
        )
    if not isinstance(polarity, str) or polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {', '.join(map(repr, POLARITIES))}, got {polarity!r}")
    if isinstance(field, bool) or not isinstance(field, numbers.Real) or not math.isfinite(float(field)) or field < 0:
        raise ValueError(
            f"field must be a finite number >= 0 (the std of the background's colour field; 0: none), got {field!r}"
        )


def make_synthetic(
    num_train: int,
    num_test: int,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    *,
    glyph_scale: int = _SCALE,
    polarity: str = "light",
    field: float = 0.0,
) -> ImageData:
    """A small image task, generated in a second, on which the choice of NAS-Bench-201 cell matters.

    Each image shows 2-4 copies of its class's glyph (see :data:`SYNTHETIC_GLYPHS`: two strokes
    that cross, touch at an end or in the middle, or miss each other by one grid cell), drawn with
    2-pixel strokes at random places, orientations (8) and colours (each stroke its own, lighter
    than the background), among 1-4 single distractor strokes, on a random background colour with
    pixel noise.

    Why the architecture matters: no single stroke, colour, orientation or position says anything
    about the class; the class is the *junction* of two strokes, at 2-pixel precision. Finding it
    takes a nonlinear stroke detector and then a second nonlinear stage at full resolution. Averaging
    (avg-pool cells) blurs the 2-pixel gaps away, and an all-skip network has only its linear stem
    at full resolution before striding. With the experiments' retrain budget (4000 images, 5 epochs,
    C=8, N=1) the all-nor_conv_3x3 network reaches about 95%, all skip_connect about 77% and all
    avg_pool_3x3 about 23% (5 classes, 5 seeds; ``experiments/arch_matters.py``). Unlike 1-pixel strokes on
    a smooth colour field (this task's first version), the signal survives the mixed paths of a
    weight-sharing supernet, so a search can learn it.

    Train and test images come from independent streams of ``seed``; labels are balanced.

    The keyword-only knobs make the task's variants (``experiments/synthetic_variants.py``); their
    defaults are the shipped task described above, and a variant draws from the same random
    streams, so only what the knob changes differs:

    * ``glyph_scale``: pixels per cell of the glyphs' 7 x 7 design grid, so strokes and gaps are
      ``glyph_scale`` pixels wide and glyphs ``7 * glyph_scale`` pixels square (2: the shipped
      2-pixel strokes; 1: 1-pixel strokes, 7 x 7 glyphs). ``image_size`` must be at least
      ``7 * glyph_scale``.
    * ``polarity``: ``"light"`` (each stroke lighter than the background in every channel) or
      ``"either"`` (lighter or darker, drawn at random per stroke and channel).
    * ``field``: std (on the 0..1 scale) of a smooth random colour field added to each image's
      background, bilinearly upsampled from 4 x 4 values per channel; 0 (the default) adds none.

    The task's first version was ``glyph_scale=1, polarity="either", field=0.08``. A bad knob
    raises ``ValueError`` naming it; bad sizes or class counts raise :class:`nas.errors.UserError`.
    """
    _check_knobs(glyph_scale, polarity, field)
    if not 2 <= int(num_classes) <= len(SYNTHETIC_GLYPHS):
        raise UserError(
            f"the synthetic data set has 2..{len(SYNTHETIC_GLYPHS)} classes, not {num_classes}. "
            "Fix: choose num_classes in that range"
        )
    scale = int(glyph_scale)
    glyph_px = _GLYPH * scale
    if int(image_size) < glyph_px:
        if scale == _SCALE:
            raise UserError(f"synthetic images need image_size >= {glyph_px}, got {image_size}. Fix: use 32")
        raise UserError(
            f"synthetic images with glyph_scale={scale} need image_size >= {glyph_px}, got {image_size}. "
            "Fix: use a larger image_size or a smaller glyph_scale"
        )
    if int(num_train) < 1 or int(num_test) < 1:
        raise UserError(
            f"synthetic data needs at least 1 training and 1 test image, got {num_train} and {num_test}. "
            "Fix: set data.num_train and data.num_test"
        )
    knobs = {"scale": scale, "light": polarity == "light", "field": float(field)}
    parts = []
    for split, num in ((0, int(num_train)), (1, int(num_test))):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & (2**63 - 1), split])))
        parts.append(_synthetic_images(num, int(image_size), int(num_classes), rng, **knobs))
    (train_x, train_y), (test_x, test_y) = parts
    x = torch.from_numpy(train_x)
    flat = x.transpose(0, 1).reshape(3, -1).float().div_(255)
    mean = tuple(round(float(v), 4) for v in flat.mean(1))
    std = tuple(round(float(v), 4) for v in flat.std(1))
    return ImageData(
        train_x=x,
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=int(num_classes),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        name="synthetic",
    )
