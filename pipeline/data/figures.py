"""Articulated human-like figures for synthetic pose data: pose sampling, drawing, joint visibility.

A figure is a stick body seen from the front: a torso quad, limbs as thick capsules, a round head with eyes,
nose and ears. Every limb segment has its own colour and left/right use different palettes, so a horizontal
flip is learnable (a flipped figure shows the right-side colours on the other side). The same body points give
both the MPII 16-joint and the COCO 17-keypoint skeletons.

Visibility is read from an "owner" map drawn alongside the image: pixel = index + 1 of the person on top, 255
for an occluder. A joint whose pixel belongs to someone or something else is occluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

BODY_POINTS = (
    "head_top", "upper_neck", "thorax", "pelvis", "head_center", "nose", "l_eye", "r_eye", "l_ear", "r_ear",
    "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle",
)  # fmt: skip
_P = {name: i for i, name in enumerate(BODY_POINTS)}

MPII_FROM_BODY = tuple(_P[n] for n in (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
))  # fmt: skip
"""Body point index of each MPII joint, in ``models.joints.MPII`` order."""

COCO_FROM_BODY = tuple(_P[n] for n in (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
    "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
))  # fmt: skip
"""Body point index of each COCO keypoint, in ``models.joints.COCO`` order."""

# Limb segments (from, to, base RGB colour): warm colours on the person's right, cold ones on the left.
_LIMBS = (
    ("r_hip", "r_knee", (200, 40, 160)), ("r_knee", "r_ankle", (250, 130, 190)),
    ("l_hip", "l_knee", (40, 160, 60)), ("l_knee", "l_ankle", (170, 230, 60)),
    ("r_shoulder", "r_elbow", (220, 40, 40)), ("r_elbow", "r_wrist", (245, 150, 30)),
    ("l_shoulder", "l_elbow", (40, 80, 220)), ("l_elbow", "l_wrist", (40, 200, 230)),
)  # fmt: skip
_SKIN_TONES = ((241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))


@dataclass(frozen=True)
class Figure:
    """One drawn person.

    Attributes:
        points: (P, 2) float64 body points in image pixels (pixel centres on integers), ``BODY_POINTS`` order.
        height: nominal body height in pixels (head top to feet when standing).
        head_radius: radius of the head disc in pixels.
        thickness: limb capsule width in pixels.
    """

    points: np.ndarray
    height: float
    head_radius: float
    thickness: float

    def extent(self) -> tuple[float, float, float, float]:
        """Box (x1, y1, x2, y2) around everything drawn: points padded by the limb and head sizes."""
        pad = max(self.thickness * 0.5, 1.0)
        lo = self.points.min(axis=0) - pad
        hi = self.points.max(axis=0) + pad
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def head_box(self) -> tuple[float, float, float, float]:
        """Axis-aligned head rectangle (x1, y1, x2, y2), proportioned like MPII's annotated head boxes."""
        cx, cy = self.points[_P["head_center"]]
        r = self.head_radius
        return float(cx - 0.8 * r), float(cy - 1.05 * r), float(cx + 0.8 * r), float(cy + 1.05 * r)


def _unit(deg: float) -> np.ndarray:
    """Direction at ``deg`` degrees from image-down, positive towards image-right."""
    rad = np.deg2rad(deg)
    return np.array([np.sin(rad), np.cos(rad)])


def sample_figure(rng: np.random.Generator, pelvis: tuple[float, float], height: float) -> Figure:
    """Draw a random front-facing pose: torso lean, head tilt, shoulder/hip yaw, arm and leg angles.

    Args:
        rng: random generator (the only source of randomness, for determinism).
        pelvis: pelvis position (x, y) in image pixels.
        height: body height in pixels.
    """
    h = height
    lean = rng.normal(0.0, 8.0) if rng.random() > 0.12 else rng.uniform(-60.0, 60.0)
    up = -_unit(lean)  # pelvis -> thorax
    side = np.array([-up[1], up[0]])  # towards image-right when upright (-up rotated by 90 degrees)
    yaw = rng.uniform(0.55, 1.0)  # body turned away from the camera shortens widths
    pts = np.zeros((len(BODY_POINTS), 2))
    pts[_P["pelvis"]] = pelvis
    pts[_P["thorax"]] = pts[_P["pelvis"]] + up * 0.30 * h * rng.uniform(0.9, 1.1)
    pts[_P["upper_neck"]] = pts[_P["thorax"]] + up * 0.05 * h
    radius = 0.065 * h * rng.uniform(0.9, 1.1)
    head_up = -_unit(lean + rng.normal(0.0, 12.0))
    head_side = np.array([-head_up[1], head_up[0]])
    center = pts[_P["upper_neck"]] + head_up * radius
    pts[_P["head_center"]] = center
    pts[_P["head_top"]] = center + head_up * radius
    turn = rng.uniform(-0.3, 0.3) * radius  # the face slides sideways when the head turns
    pts[_P["nose"]] = center - head_up * 0.15 * radius + head_side * turn
    # Facing the camera, the person's right is on the image's left. Limb angles are measured from "down" in the
    # torso frame (``lean``), positive outwards.
    for sign, prefix in ((-1.0, "r_"), (1.0, "l_")):
        pts[_P[prefix + "eye"]] = center + head_up * 0.25 * radius + head_side * (sign * 0.38 * radius + turn)
        pts[_P[prefix + "ear"]] = center + head_side * sign * 0.95 * radius * yaw + head_side * 0.3 * turn
        shoulder = pts[_P["thorax"]] + side * sign * 0.11 * h * yaw
        pts[_P[prefix + "shoulder"]] = shoulder
        a1 = rng.uniform(-40.0, 175.0)
        a2 = a1 + rng.uniform(-30.0, 150.0)
        elbow = shoulder + _unit(lean + sign * a1) * 0.17 * h * rng.uniform(0.6, 1.0)
        pts[_P[prefix + "elbow"]] = elbow
        pts[_P[prefix + "wrist"]] = elbow + _unit(lean + sign * a2) * 0.15 * h * rng.uniform(0.6, 1.0)
        hip = pts[_P["pelvis"]] + side * sign * 0.08 * h * yaw
        pts[_P[prefix + "hip"]] = hip
        t1 = rng.uniform(-20.0, 45.0) if rng.random() > 0.15 else rng.uniform(45.0, 110.0)
        t2 = t1 + rng.uniform(-100.0, 20.0)
        knee = hip + _unit(lean + sign * t1) * 0.24 * h * rng.uniform(0.7, 1.0)
        pts[_P[prefix + "knee"]] = knee
        pts[_P[prefix + "ankle"]] = knee + _unit(lean + sign * t2) * 0.24 * h * rng.uniform(0.7, 1.0)
    return Figure(points=pts, height=h, head_radius=radius, thickness=0.05 * h * rng.uniform(0.8, 1.25))


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 25) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _capsule(draws: list[tuple[ImageDraw.ImageDraw, object]], a: np.ndarray, b: np.ndarray, width: float) -> None:
    """A thick segment with round ends, on the image and on the owner map at once."""
    r = width * 0.5
    w = max(round(width), 1)
    for draw, fill in draws:
        draw.line([float(a[0]), float(a[1]), float(b[0]), float(b[1])], fill=fill, width=w)
        for p in (a, b):
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=fill)


def draw_figure(
    rng: np.random.Generator, image: ImageDraw.ImageDraw, owner: ImageDraw.ImageDraw, figure: Figure, owner_id: int
) -> None:
    """Paint ``figure`` on ``image`` and mark its pixels ``owner_id`` on ``owner``."""
    p = {name: figure.points[i] for name, i in _P.items()}
    width = figure.thickness
    torso_colour = tuple(int(v) for v in rng.integers(30, 226, size=3))
    skin = _jitter(rng, _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))], 12)
    limbs = [(p[a], p[b], _jitter(rng, colour)) for a, b, colour in _LIMBS]
    # Legs first, then the torso over the hips, head, arms last (arms cross in front of the body).
    for a, b, colour in limbs[:4]:
        _capsule([(image, colour), (owner, owner_id)], a, b, width)
    quad = [tuple(p[n]) for n in ("r_shoulder", "l_shoulder", "l_hip", "r_hip")]
    for draw, fill in ((image, torso_colour), (owner, owner_id)):
        draw.polygon(quad, fill=fill)
    _capsule([(image, skin), (owner, owner_id)], p["thorax"], p["upper_neck"], width * 0.8)
    r = figure.head_radius
    c = p["head_center"]
    for draw, fill in ((image, skin), (owner, owner_id)):
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)
    dot = max(r * 0.12, 1.0)
    for name, colour in (("l_eye", (20, 20, 60)), ("r_eye", (20, 20, 60)), ("nose", (150, 60, 40)),
                         ("l_ear", (90, 90, 220)), ("r_ear", (220, 90, 90))):  # fmt: skip
        q = p[name]
        size = dot * (1.6 if name.endswith("ear") else 1.0)
        image.ellipse([q[0] - size, q[1] - size, q[0] + size, q[1] + size], fill=colour)
    order = (4, 5, 6, 7) if rng.random() < 0.5 else (6, 7, 4, 5)
    for i in order:
        a, b, colour = limbs[i]
        _capsule([(image, colour), (owner, owner_id)], a, b, width)


def textured_background(
    rng: np.random.Generator, size: tuple[int, int], shapes: tuple[int, int] = (2, 8)
) -> Image.Image:
    """Smooth colour noise, ``shapes`` (min, max) random stripes and blobs, and pixel noise: clutter, not a body."""
    w, h = size
    grid = rng.integers(0, 256, size=(int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3), dtype=np.uint8)
    image = Image.fromarray(grid, "RGB").resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(shapes[0], shapes[1] + 1))):
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        x1, x2 = sorted(rng.uniform(-0.2, 1.2, size=2) * w)
        y1, y2 = sorted(rng.uniform(-0.2, 1.2, size=2) * h)
        kind = rng.random()
        if kind < 0.4:
            draw.rectangle([x1, y1, x2, y2], fill=colour)
        elif kind < 0.7:
            draw.ellipse([x1, y1, x2, y2], fill=colour)
        else:  # thin straight clutter, thinner than limbs so it teaches "not every line is an arm"
            draw.line([x1, y1, x2, y2], fill=colour, width=int(rng.integers(1, 5)))
    noise = rng.integers(-12, 13, size=(h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8), "RGB")


def draw_occluder(
    rng: np.random.Generator, image: ImageDraw.ImageDraw, owner: ImageDraw.ImageDraw, around: np.ndarray, size: float
) -> None:
    """A solid box or disc of about ``size`` pixels near ``around`` (x, y), marked 255 on the owner map."""
    cx, cy = around + rng.normal(0.0, size * 0.3, size=2)
    half_w, half_h = size * rng.uniform(0.3, 0.7, size=2)
    box = [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    if rng.random() < 0.5:
        image.rectangle(box, fill=colour)
        owner.rectangle(box, fill=255)
    else:
        image.ellipse(box, fill=colour)
        owner.ellipse(box, fill=255)


@dataclass(frozen=True)
class Scene:
    """A rendered image and its people.

    Attributes:
        image: the RGB image.
        figures: the people, in drawing order.
        owner: (H, W) uint8 map, ``i + 1`` where person ``i`` is on top, 255 for occluders, 0 background.
    """

    image: Image.Image
    figures: tuple[Figure, ...]
    owner: np.ndarray

    def visible(self, index: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For the given (K, 2) points of person ``index``: (inside the image, not covered by anything else)."""
        h, w = self.owner.shape
        xy = np.rint(points).astype(np.int64)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        own = np.zeros(len(points), dtype=bool)
        own[inside] = self.owner[xy[inside, 1], xy[inside, 0]] == index + 1
        return inside, own

    def area(self, index: int) -> int:
        """Number of pixels of person ``index`` left visible (what a COCO segmentation would cover)."""
        return int(np.count_nonzero(self.owner == index + 1))


def render_scene(
    rng: np.random.Generator,
    size: tuple[int, int],
    max_people: int = 3,
    *,
    occluder_prob: float = 0.35,
    clutter_shapes: tuple[int, int] = (2, 8),
) -> Scene:
    """One image of 1..``max_people`` figures of random size and place, on clutter, maybe occluded.

    Args:
        rng: random generator (the only source of randomness).
        size: image (width, height).
        max_people: people per image, at most.
        occluder_prob: chance that the image gets 1-2 occluders over its people.
        clutter_shapes: (min, max) number of background stripes and blobs.
    """
    w, h = size
    image = textured_background(rng, size, clutter_shapes)
    owner_img = Image.new("L", size, 0)
    draw, owner = ImageDraw.Draw(image), ImageDraw.Draw(owner_img)
    count = int(rng.choice(np.arange(1, max_people + 1), p=_people_probs(max_people)))
    figures = []
    for i in range(count):
        height = rng.uniform(0.45, 0.85) * h / (1.0 + 0.3 * (count - 1))
        pelvis = (rng.uniform(0.15, 0.85) * w, rng.uniform(0.45 * height, h - 0.35 * height))
        figure = sample_figure(rng, pelvis, height)
        draw_figure(rng, draw, owner, figure, i + 1)
        figures.append(figure)
    if rng.random() < occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            target = figures[int(rng.integers(len(figures)))]
            around = target.points[int(rng.integers(len(BODY_POINTS)))]
            draw_occluder(rng, draw, owner, around, target.height * rng.uniform(0.15, 0.35))
    return Scene(image=image, figures=tuple(figures), owner=np.asarray(owner_img))


def _people_probs(max_people: int) -> np.ndarray:
    weights = np.array([0.5, 0.3, 0.2, 0.1, 0.05, 0.05][:max_people])
    return weights / weights.sum()
