"""Object detection in a camera frame: what is there, in which direction, how far.

A classical detector for objects of known colour and height standing on the floor
(the built-in world's beacons and pillars; a coloured cone or marker on a real floor).
For each image column it takes the vertical run of pixels around the horizon row that
share the colour there, classifies that colour by chromaticity (which fog and shading
do not change), and groups neighbouring columns of one class into a detection:

- bearing (rad, + left of the optical axis, as REP-103's base frame) from the columns
  through the intrinsics (fx, cx);
- range to the object's centre (m) from its apparent height (known height ``height_m``
  over fy, corrected for the ray's angle), plus the radius its angular width implies;
- variances from a pixel of quantisation in height and width. An object so close that
  it fills whole columns has no measurable range: NaN.

Anything that finds objects can take its place: a learned detector's output relayed
into sage_msgs/Detection2DArray (which mirrors vision_msgs) feeds the same memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

WORLD_CLASSES = {            # name -> reference RGB (the built-in world's paints)
    'red': (220, 40, 40), 'green': (40, 200, 60), 'blue': (50, 80, 230),
    'yellow': (230, 210, 40), 'pillar': (110, 110, 110),
}
WORLD_BACKGROUND = {'wall': ((200, 195, 185), 1.2)}   # rgb, height m: in scans, not reported


SCAN_MIN_M, SCAN_MAX_M = 0.1, 10.0   # farther surfaces are a few pixels tall: no range


def even_scan(bearing: np.ndarray, ranges: np.ndarray):
    """Resample per-column rays to evenly spaced angles, as a LaserScan carries them.

    Returns (angles ascending, ranges): the nearest column's range per angle, +inf beyond
    SCAN_MAX_M (REP-117); NaN stays NaN (no surface known). The camera node publishes this
    as camera/scan; the offline pipeline hands the same to the spatial memory.
    """
    ranges = np.where(ranges > SCAN_MAX_M, np.inf, ranges)
    angles = np.linspace(bearing[-1], bearing[0], len(bearing))
    nearest = np.abs(bearing[None, ::-1] - angles[:, None]).argmin(1)
    return angles, ranges[::-1][nearest]


@dataclass
class DetectorConfig:
    """Classes to find and the limits of a detection."""

    classes: dict = field(default_factory=lambda: dict(WORLD_CLASSES))
    background: dict = field(default_factory=lambda: dict(WORLD_BACKGROUND))
    height_m: float = 1.0         # the objects' height: range from apparent size
    min_columns: int = 2          # narrower runs are noise
    min_height_px: int = 3
    colour_tolerance: float = 8.0     # grey levels: a run is one colour within this
    max_chroma_distance: float = 0.06   # farther from every class: not an object


@dataclass
class Detection:
    """One object: class, score, bounding box (px) and where it is from the camera."""

    class_id: str            # the names follow sage_msgs/Detection2D (vision_msgs)
    score: float
    center_x: float
    center_y: float
    size_x: float
    size_y: float
    bearing: float
    bearing_variance: float
    range: float
    range_variance: float


def _chroma(rgb) -> np.ndarray:
    rgb = np.asarray(rgb, np.float64)
    return rgb / np.maximum(rgb.sum(-1, keepdims=True), 1e-6)


class Detector:
    """Find the configured objects in RGB frames (see the module docstring)."""

    def __init__(self, config: DetectorConfig | None = None):
        self.cfg = config or DetectorConfig()
        names = list(self.cfg.classes) + list(self.cfg.background)
        self._names = names
        self._reported = np.array([n in self.cfg.classes for n in names])
        self._protos = _chroma([*self.cfg.classes.values(),
                                *(rgb for rgb, _ in self.cfg.background.values())])
        self._heights = np.array([self.cfg.height_m] * len(self.cfg.classes) +
                                 [h for _, h in self.cfg.background.values()])

    def _columns(self, image: np.ndarray, fx: float, fy: float, cy: float):
        """Per column: run height and top (px), chroma distances to each class, best."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'expected an H×W×3 RGB image, got shape {image.shape}')
        if not all(math.isfinite(v) and v > 0 for v in (fx, fy)):
            raise ValueError(f'focal lengths must be finite and > 0, got {fx}, {fy}')
        img = image.astype(np.float32)
        h = img.shape[0]
        row = min(max(int(round(cy)), 1), h - 1)
        centre = img[row - 1:row + 1].mean(0)                       # W×3 at the horizon
        same = np.abs(img - centre[None]).max(-1) < self.cfg.colour_tolerance
        up = np.cumprod(same[row - 1::-1], axis=0).sum(0)           # rows above, contiguous
        down = np.cumprod(same[row:], axis=0).sum(0)
        height = up + down
        top = row - up
        sums = np.concatenate([np.zeros((1,) + img.shape[1:]), np.cumsum(img, 0)])
        cols = np.arange(img.shape[1])
        mean = (sums[top + height, cols] - sums[top, cols]) / np.maximum(height, 1)[:, None]
        dist = np.abs(_chroma(mean)[:, None, :] - self._protos[None]).sum(-1)   # W×classes
        return height, top, dist, dist.argmin(1)

    def look(self, image: np.ndarray, fx: float, fy: float, cx: float, cy: float):
        """Return (detections, (bearing, range)) of one frame: ``detect`` and ``scan``."""
        columns = self._columns(image, fx, fy, cy)
        return (self.detect(image, fx, fy, cx, cy, columns),
                self.scan(image, fx, fy, cx, cy, columns))

    def scan(self, image: np.ndarray, fx: float, fy: float, cx: float, cy: float,
             columns=None):
        """Return (bearing, range) per column to the first surface, like a laser scan.

        Range from the run's height and its class's known height (walls included); NaN
        where the column's colour is no known class or the surface is too close to tell.
        """
        height, _, dist, best = columns or self._columns(image, fx, fy, cy)
        cols = np.arange(image.shape[1])
        bearing = np.arctan((cx - (cols + 0.5)) / fx)
        known = (dist[cols, best] < self.cfg.max_chroma_distance) & \
            (height >= self.cfg.min_height_px) & (height < image.shape[0])
        with np.errstate(divide='ignore'):
            rng = fy * self._heights[best] / (np.maximum(height, 1) * np.cos(bearing))
        return bearing, np.where(known, rng, np.nan)

    def detect(self, image: np.ndarray, fx: float, fy: float, cx: float, cy: float,
               columns=None) -> list[Detection]:
        """Return the detections in an H×W×3 uint8 RGB ``image`` with intrinsics."""
        c = self.cfg
        height, top, dist, best = columns or self._columns(image, fx, fy, cy)
        h = image.shape[0]
        cols = np.arange(image.shape[1])
        ok = (dist[cols, best] < c.max_chroma_distance) & self._reported[best] & \
            (height >= c.min_height_px)
        label = np.where(ok, best, -1)
        out = []
        start = 0
        for end in range(1, len(label) + 1):
            if end < len(label) and label[end] == label[start]:
                continue
            # a run filling whole columns has no visible top or bottom there: all of them,
            # no evidence of a shape (a grey frame); some, too close to measure (NaN range)
            if label[start] >= 0 and end - start >= c.min_columns and \
                    height[start:end].min() < h:
                out.append(self._detection(label[start], start, end, height, top, dist,
                                           fx, fy, cx, image.shape[1], h))
            start = end
        return out

    def _detection(self, k, start, end, height, top, dist, fx, fy, cx, width,
                   rows) -> Detection:
        c = self.cfg
        run = slice(start, end)
        # nearest column: the tallest; its ray's angle turns apparent height into range
        near = start + int(np.argmax(height[run]))
        angle = math.atan((cx - (near + 0.5)) / fx)
        surface = fy * c.height_m / (height[near] * math.cos(angle))
        left, right = math.atan((cx - start) / fx), math.atan((cx - end) / fx)
        half = 0.5 * (left - right)
        centre = surface / max(1.0 - math.sin(half), 0.05)          # surface + radius
        bearing = 0.5 * (left + right)
        pixel = 1.0 / fx                                             # rad per px, near axis
        truncated = start == 0 or end == width      # cut by the image edge
        bearing_var = pixel ** 2 / 6 + (half ** 2 if truncated else 0.0)
        range_var = (centre / height[near]) ** 2 + (pixel * centre) ** 2
        if height[near] >= rows:                    # closer than its height can tell
            centre = range_var = float('nan')
        margin = float(np.mean(np.sort(dist[run], 1)[:, 1] - dist[run, k]))
        score = min(1.0, margin / 0.05) * min(1.0, (end - start) / 4) * (0.5 if truncated
                                                                         else 1.0)
        return Detection(self._names[k], float(score), 0.5 * (start + end),
                         float(top[near] + height[near] / 2), float(end - start),
                         float(height[near]), float(bearing), float(bearing_var),
                         float(centre), float(range_var))
