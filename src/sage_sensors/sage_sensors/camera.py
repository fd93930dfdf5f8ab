"""Camera capture through OpenCV and camera calibration files. ROS-free.

``FrameSource(spec)`` opens what ``spec`` names and returns RGB uint8 frames:

- ``0``, ``/dev/video0``      a V4L2 device (index or path)
- ``nvarguscamerasrc ! ... ! appsink``  a GStreamer pipeline (Jetson CSI cameras)
- ``/path/video.avi``         a video file (paced to its frame rate, optionally looped)
- ``/path/folder``            an image folder (sorted; png, jpg, bmp, tif)

A source that cannot be opened raises ``CaptureError`` saying what was looked
for and what exists. ``load_camera_info`` reads the YAML written by the ROS
``camera_calibration`` package.
"""

from __future__ import annotations

import glob
import os
import time

import cv2
import numpy as np
import yaml

IMAGE_EXT = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.pgm')


class CaptureError(RuntimeError):
    """A camera source could not be opened or stopped delivering frames."""


def available_sources() -> str:
    """Describe the video devices this machine has (for error messages)."""
    devices = sorted(glob.glob('/dev/video*'))
    gst = 'YES' in next((line for line in cv2.getBuildInformation().splitlines()
                         if 'GStreamer' in line), '')
    return (f'video devices: {", ".join(devices) or "none"}; '
            f'OpenCV GStreamer support: {"yes" if gst else "no"}')


def source_kind(spec: str) -> str:
    """Classify a source spec: 'v4l2', 'gstreamer', 'folder' or 'file'."""
    spec = spec.strip()
    if spec.isdigit() or spec.startswith('/dev/video'):
        return 'v4l2'
    if '!' in spec:
        return 'gstreamer'
    if os.path.isdir(spec):
        return 'folder'
    return 'file'


class FrameSource:
    """Frames from a device, GStreamer pipeline, video file or image folder."""

    def __init__(self, spec: str, fps: float = 0.0, loop: bool = True,
                 width: int = 0, height: int = 0):
        self.spec, self.kind = spec.strip(), source_kind(spec)
        self.loop, self.fps = loop, fps
        self._cap, self._files, self._index = None, [], 0
        self._next_t = time.monotonic()
        if self.kind == 'folder':
            self._files = sorted(f for f in glob.glob(os.path.join(self.spec, '*'))
                                 if f.lower().endswith(IMAGE_EXT))
            if not self._files:
                raise CaptureError(f'image folder {self.spec} has no {"/".join(IMAGE_EXT)} '
                                   f'files')
            self.fps = fps or 10.0
            return
        if self.kind == 'file' and not os.path.exists(self.spec):
            raise CaptureError(f'camera source {self.spec!r} is not a device, pipeline, '
                               f'folder or existing file; {available_sources()}')
        if self.kind == 'v4l2':
            target = int(self.spec) if self.spec.isdigit() else self.spec
            self._cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        elif self.kind == 'gstreamer':
            self._cap = cv2.VideoCapture(self.spec, cv2.CAP_GSTREAMER)
        else:
            self._cap = cv2.VideoCapture(self.spec)
        if not self._cap.isOpened():
            self._cap.release()
            raise CaptureError(f'OpenCV could not open {self.kind} camera source '
                               f'{self.spec!r}; {available_sources()}')
        if width and height and self.kind == 'v4l2':
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if self.kind == 'file':     # live sources pace themselves; files play at their rate
            self.fps = fps or self._cap.get(cv2.CAP_PROP_FPS) or 30.0

    def read(self) -> np.ndarray | None:
        """Return the next RGB frame, None at the end of a file that does not loop.

        Raises CaptureError when a live device stops delivering.
        """
        if self.fps and self.kind in ('file', 'folder'):
            delay = self._next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next_t = max(self._next_t, time.monotonic() - 1.0) + 1.0 / self.fps
        if self.kind == 'folder':
            if self._index >= len(self._files):
                if not self.loop:
                    return None
                self._index = 0
            path = self._files[self._index]
            self._index += 1
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            if bgr is None:
                raise CaptureError(f'cannot decode image {path}')
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        ok, bgr = self._cap.read()
        if not ok and self.kind == 'file' and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok:
            if self.kind == 'file':
                return None
            raise CaptureError(f'{self.kind} camera {self.spec!r} stopped delivering frames')
        if bgr.ndim == 2:
            return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        """Release the device."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def load_camera_info(path: str) -> dict:
    """Read a camera_calibration YAML into sensor_msgs/CameraInfo field values.

    Returns width, height, distortion_model, d, k, r, p (lists of floats).
    Raises ValueError naming the missing or malformed entry.
    """
    with open(path) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict):
        raise ValueError(f'{path}: not a camera calibration YAML')

    def matrix(key, n):
        try:
            data = [float(x) for x in doc[key]['data']]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f'{path}: missing or bad {key}.data') from exc
        if n and len(data) != n:
            raise ValueError(f'{path}: {key} has {len(data)} values, expected {n}')
        return data
    try:
        width, height = int(doc['image_width']), int(doc['image_height'])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f'{path}: missing image_width/image_height') from exc
    return {'width': width, 'height': height,
            'distortion_model': str(doc.get('distortion_model', 'plumb_bob')),
            'd': matrix('distortion_coefficients', 0), 'k': matrix('camera_matrix', 9),
            'r': matrix('rectification_matrix', 9), 'p': matrix('projection_matrix', 12)}
