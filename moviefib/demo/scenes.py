"""Procedural scenes of the demo corpus: a moving object over a textured background, drawn with numpy.

A :class:`SceneSpec` holds everything needed to draw a clip (it is small and picklable, so clips can be
rendered in worker processes); :func:`render` turns it into ``uint8 [T, H, W, 3]`` RGB frames. The
object's appearance (colour, shape, size) is visible in any frame; its motion (direction and speed of
travel, and an action: glide, bounce, spin, grow, shrink, pulse) only across frames.

Edges are anti-aliased by supersampling, and every shape carries a dark mark off its centre so that a
spinning ball or ring visibly turns.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .grammar import COLOURS, DIRECTIONS, SIZES, SPEEDS, SceneWords

_SUPERSAMPLE = 3
_TABLE_CELLS = 512
_TABLE_REACH = 1.05
_MARK_SHADE = 0.45
# Radius of the still object in a corner, as a fraction of the frame width.
_EXTRA_RADIUS = 0.08
_BOUNCE_HEIGHT = 0.10   # frame widths
_BOUNCE_HZ = 1.25       # hops per second
_SPIN_HZ = 0.75         # turns per second
_PULSE_HZ = 2.0
_GROW_RANGE = (0.6, 1.4)  # scale at the first and last frame of "grows" (reversed for "shrinks")


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = np.arange(2 * points) * math.pi / points - math.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _heart(n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y + 2.5], axis=1)
    return pts / np.abs(pts).max()


# Polygons of unit circumradius; "ball" and "ring" are drawn analytically.
_POLYGONS: dict[str, np.ndarray] = {
    "box": np.array([[-0.75, -0.75], [0.75, -0.75], [0.75, 0.75], [-0.75, 0.75]]),
    "diamond": np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]]),
    "triangle": np.array([[0.0, -1.0], [0.866, 0.5], [-0.866, 0.5]]),
    "star": _star(),
    "heart": _heart(),
}

# Muted parts of the backdrop objects: (kind, x0, y0, x1, y1, rgb) in a unit box, y down;
# kind is "rect", "ellipse" or "tri" (a triangle with apex at the top centre).
_BACKDROP_PARTS: dict[str, tuple[tuple[str, float, float, float, float, tuple[int, int, int]], ...]] = {
    "tree": (("rect", 0.42, 0.55, 0.58, 1.0, (95, 65, 40)), ("tri", 0.1, 0.0, 0.9, 0.7, (50, 95, 55))),
    "house": (("rect", 0.15, 0.45, 0.85, 1.0, (160, 140, 115)), ("tri", 0.05, 0.05, 0.95, 0.48, (125, 55, 45)),
              ("rect", 0.42, 0.68, 0.58, 1.0, (90, 60, 40))),
    "window": (("rect", 0.1, 0.1, 0.9, 0.9, (185, 185, 175)), ("rect", 0.17, 0.17, 0.47, 0.47, (115, 145, 175)),
               ("rect", 0.53, 0.17, 0.83, 0.47, (115, 145, 175)), ("rect", 0.17, 0.53, 0.47, 0.83, (115, 145, 175)),
               ("rect", 0.53, 0.53, 0.83, 0.83, (115, 145, 175))),
    "door": (("rect", 0.25, 0.0, 0.75, 1.0, (115, 75, 45)), ("ellipse", 0.6, 0.5, 0.68, 0.58, (205, 185, 70))),
    "lamp": (("rect", 0.46, 0.3, 0.54, 1.0, (95, 95, 100)), ("rect", 0.3, 0.92, 0.7, 1.0, (95, 95, 100)),
             ("ellipse", 0.28, 0.0, 0.72, 0.4, (225, 215, 150))),
}


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to draw one clip.

    Attributes:
        words: the visual attributes (colour, shape, size, action, speed, direction, backdrop, extra).
        width, height: frame size in pixels.
        fps: frames per second.
        num_frames: number of frames.
        palette: ``(top, bottom)`` RGB colours of the background gradient (one per movie).
        texture_seed: seed of the background's low-frequency texture (one per movie).
        start: ``(x, y)`` centre of the moving object on the first frame, in pixels.
        angle: its orientation on the first frame, radians.
        spin_sign: +1 or -1, the sense of rotation when it spins.
        backdrop_box: ``(x0, y0, x1, y1)`` where the backdrop object is drawn, pixels.
        extra_at: ``(x, y)`` centre of the still object (when ``words.extra`` is set).
    """

    words: SceneWords
    width: int
    height: int
    fps: float
    num_frames: int
    palette: tuple[tuple[int, int, int], tuple[int, int, int]]
    texture_seed: int
    start: tuple[float, float]
    angle: float
    spin_sign: int
    backdrop_box: tuple[float, float, float, float]
    extra_at: tuple[float, float] | None = None


def _scale_range(action: str) -> tuple[float, float]:
    if action == "grows":
        return _GROW_RANGE
    if action == "shrinks":
        return _GROW_RANGE[::-1]
    if action == "pulses":
        return (0.7, 1.3)
    return (1.0, 1.0)


def layout_scene(words: SceneWords, rng: np.random.Generator, *, width: int, height: int, fps: float,
                 num_frames: int, palette, texture_seed: int) -> SceneSpec:
    """Place the objects of a scene so that the moving one stays in frame for the whole clip."""
    radius = SIZES[words.size] * width * max(_scale_range(words.action))
    dx, dy = DIRECTIONS[words.direction]
    travel = SPEEDS[words.speed] * width * (num_frames - 1) / fps
    hop = _BOUNCE_HEIGHT * width if words.action == "bounces" else 0.0

    def along(extent: float) -> float:
        # Start far enough from the side it moves towards; centre the path if it cannot fit.
        lo, hi = radius, extent - radius - travel
        pos = rng.uniform(lo, hi) if hi > lo else (extent - travel) / 2
        return pos if (dx > 0 or dy > 0) else extent - pos

    def across(extent: float) -> float:
        lo, hi = radius + hop, extent - radius
        return rng.uniform(lo, hi) if hi > lo else extent / 2

    start = (along(width), across(height)) if dx else (across(width), along(height))
    side = rng.uniform(0.30, 0.42) * min(width, height)
    bx = rng.choice([rng.uniform(0, width * 0.1), rng.uniform(width * 0.9 - side, width - side)])
    by = rng.uniform(height * 0.05, height - side)
    extra_at = None
    if words.extra is not None:
        r = _EXTRA_RADIUS * width * 1.3
        extra_at = (float(rng.choice([r, width - r])), float(rng.choice([r, height - r])))
    return SceneSpec(
        words=words, width=width, height=height, fps=fps, num_frames=num_frames,
        palette=(tuple(palette[0]), tuple(palette[1])), texture_seed=texture_seed,
        start=(float(start[0]), float(start[1])), angle=float(rng.uniform(0, 2 * math.pi)),
        spin_sign=int(rng.choice([-1, 1])), backdrop_box=(float(bx), float(by), float(bx + side),
                                                         float(by + side)),
        extra_at=extra_at,
    )


def _inside_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points."""
    inside = np.zeros(px.shape, dtype=bool)
    x0, y0 = poly[-1]
    for x1, y1 in poly:
        crosses = (y1 > py) != (y0 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < xs)
        x0, y0 = x1, y1
    return inside


def _exact_masks(shape: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(body, mark) masks for points in the object's own unit frame."""
    r2 = u * u + v * v
    if shape == "ball":
        body = r2 <= 1.0
    elif shape == "ring":
        body = (r2 <= 1.0) & (r2 >= 0.55 ** 2)
    else:
        body = _inside_polygon(u, v, _POLYGONS[shape])
    mark_x = 0.78 if shape == "ring" else 0.42
    mark = body & ((u - mark_x) ** 2 + v * v <= 0.17 ** 2)
    return body, mark


@functools.cache
def _mask_table(shape: str) -> np.ndarray:
    """A shape's masks sampled on a fine grid over [-_TABLE_REACH, _TABLE_REACH]^2: 0 out, 1 body, 2 mark.

    Looking points up in it is several times faster than testing polygons edge by edge, and at
    _TABLE_CELLS cells its step is finer than a supersample of the largest object.
    """
    centres = (np.arange(_TABLE_CELLS) + 0.5) / _TABLE_CELLS * 2 * _TABLE_REACH - _TABLE_REACH
    u, v = np.meshgrid(centres, centres)
    body, mark = _exact_masks(shape, u, v)
    return body.astype(np.uint8) + mark.astype(np.uint8)


def _shape_masks(shape: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    table = _mask_table(shape)
    scale = _TABLE_CELLS / (2 * _TABLE_REACH)
    iu = np.floor((u + _TABLE_REACH) * scale).astype(np.int64)
    iv = np.floor((v + _TABLE_REACH) * scale).astype(np.int64)
    inside = (iu >= 0) & (iu < _TABLE_CELLS) & (iv >= 0) & (iv < _TABLE_CELLS)
    value = np.where(inside, table[np.clip(iv, 0, _TABLE_CELLS - 1), np.clip(iu, 0, _TABLE_CELLS - 1)], 0)
    return value >= 1, value == 2


def _draw_object(frame: np.ndarray, shape: str, rgb, cx: float, cy: float, radius: float,
                 angle: float) -> None:
    """Composite an anti-aliased object onto ``frame`` (float32 [H, W, 3]) in place."""
    h, w, _ = frame.shape
    reach = radius * 1.05 + 1
    x0, x1 = max(int(cx - reach), 0), min(int(math.ceil(cx + reach)) + 1, w)
    y0, y1 = max(int(cy - reach), 0), min(int(math.ceil(cy + reach)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    s = _SUPERSAMPLE
    offsets = (np.arange(s) + 0.5) / s
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    gx, gy = np.meshgrid(xs - cx, ys - cy)
    cos, sin = math.cos(angle), math.sin(angle)
    u = (cos * gx + sin * gy) / radius
    v = (-sin * gx + cos * gy) / radius
    body, mark = _shape_masks(shape, u, v)
    ny, nx = y1 - y0, x1 - x0
    cover = body.reshape(ny, s, nx, s).mean(axis=(1, 3))[..., None]
    dark = mark.reshape(ny, s, nx, s).mean(axis=(1, 3))[..., None]
    # Light from above: a soft vertical gradient makes the flat shapes read as objects.
    light = 1.12 - 0.24 * np.clip((np.arange(y0, y1) + 0.5 - cy) / radius * 0.5 + 0.5, 0, 1)
    colour = np.asarray(rgb, dtype=np.float32)[None, None, :] * light[:, None, None]
    colour = np.clip(colour, 0, 255) * (1 - dark * (1 - _MARK_SHADE))
    region = frame[y0:y1, x0:x1]
    region *= 1 - cover
    region += cover * colour


def _fill_parts(frame: np.ndarray, kind: str, box: tuple[float, float, float, float]) -> None:
    h, w, _ = frame.shape
    bx0, by0, bx1, by1 = box
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    u = (xs - bx0) / (bx1 - bx0)
    v = (ys - by0) / (by1 - by0)
    for part, x0, y0, x1, y1, rgb in _BACKDROP_PARTS[kind]:
        if part == "rect":
            mask = (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)
        elif part == "ellipse":
            cu, cv, ru, rv = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            mask = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1
        else:
            t = (v - y0) / (y1 - y0)
            half = t * (x1 - x0) / 2
            mask = (t >= 0) & (t <= 1) & (np.abs(u - (x0 + x1) / 2) <= half)
        frame[mask] = rgb


def render_background(spec: SceneSpec) -> np.ndarray:
    """The still part of a clip (gradient, texture, backdrop, still object): float32 [H, W, 3]."""
    h, w = spec.height, spec.width
    top, bottom = (np.asarray(c, dtype=np.float32) for c in spec.palette)
    t = (np.arange(h, dtype=np.float32) + 0.5)[:, None, None] / h
    frame = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).copy()
    # Low-frequency texture: a coarse random grid, bilinearly upsampled.
    grid = np.random.default_rng(spec.texture_seed).normal(0, 9, size=(6, 6)).astype(np.float32)
    gy = np.linspace(0, 5, h, dtype=np.float32)
    gx = np.linspace(0, 5, w, dtype=np.float32)
    iy, ix = np.minimum(gy.astype(int), 4), np.minimum(gx.astype(int), 4)
    fy, fx = (gy - iy)[:, None], (gx - ix)[None, :]
    tex = (grid[iy][:, ix] * (1 - fy) * (1 - fx) + grid[iy + 1][:, ix] * fy * (1 - fx)
           + grid[iy][:, ix + 1] * (1 - fy) * fx + grid[iy + 1][:, ix + 1] * fy * fx)
    frame += tex[..., None]
    _fill_parts(frame, spec.words.backdrop, spec.backdrop_box)
    if spec.words.extra is not None and spec.extra_at is not None:
        colour, shape = spec.words.extra
        _draw_object(frame, shape, COLOURS[colour], spec.extra_at[0], spec.extra_at[1],
                     _EXTRA_RADIUS * w, 0.0)
    return frame


def object_track(spec: SceneSpec) -> list[tuple[float, float, float, float]]:
    """``(x, y, radius, angle)`` of the moving object on each frame."""
    words = spec.words
    dx, dy = DIRECTIONS[words.direction]
    speed = SPEEDS[words.speed] * spec.width
    base = SIZES[words.size] * spec.width
    s0, s1 = _scale_range(words.action)
    track = []
    for i in range(spec.num_frames):
        t = i / spec.fps
        frac = i / max(spec.num_frames - 1, 1)
        x, y = spec.start[0] + dx * speed * t, spec.start[1] + dy * speed * t
        if words.action == "bounces":
            # Hops away from the side perpendicular to travel (upwards for horizontal travel).
            hop = _BOUNCE_HEIGHT * spec.width * abs(math.sin(math.pi * _BOUNCE_HZ * t))
            x, y = x - abs(dy) * hop, y - abs(dx) * hop
        if words.action == "pulses":
            scale = 1 + 0.3 * math.sin(2 * math.pi * _PULSE_HZ * t)
        else:
            scale = s0 + (s1 - s0) * frac
        angle = spec.angle
        if words.action == "spins":
            angle += spec.spin_sign * 2 * math.pi * _SPIN_HZ * t
        track.append((x, y, base * scale, angle))
    return track


def render(spec: SceneSpec, background: np.ndarray | None = None):
    """Yield the frames of a clip, ``uint8 [H, W, 3]`` RGB, one at a time."""
    if background is None:
        background = render_background(spec)
    rgb = COLOURS[spec.words.colour]
    for x, y, radius, angle in object_track(spec):
        frame = background.copy()
        _draw_object(frame, spec.words.shape, rgb, x, y, radius, angle)
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)
