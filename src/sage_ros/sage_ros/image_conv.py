"""sensor_msgs/Image <-> numpy, the one place SAGE converts images (no cv_bridge)."""

from __future__ import annotations

import numpy as np

# encoding -> (dtype, channels)
ENCODINGS = {
    'rgb8': (np.uint8, 3), 'bgr8': (np.uint8, 3), 'rgba8': (np.uint8, 4),
    'bgra8': (np.uint8, 4), 'mono8': (np.uint8, 1), 'mono16': (np.uint16, 1),
    '8UC1': (np.uint8, 1), '8UC3': (np.uint8, 3), '16UC1': (np.uint16, 1),
    '32FC1': (np.float32, 1),
}


class ImageError(ValueError):
    """An Image message that cannot be turned into an array (encoding, size)."""


def image_to_numpy(msg) -> np.ndarray:
    """Return an H×W or H×W×C view of ``msg.data`` (zero-copy where possible)."""
    if msg.encoding not in ENCODINGS:
        raise ImageError(f'unsupported image encoding {msg.encoding!r}; '
                         f'supported: {", ".join(ENCODINGS)}')
    dtype, channels = ENCODINGS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    row = msg.width * channels * itemsize
    if msg.width == 0 or msg.height == 0 or msg.step < row:
        raise ImageError(f'bad image geometry {msg.width}x{msg.height} step {msg.step}')
    if len(msg.data) < msg.step * msg.height:
        raise ImageError(f'image data has {len(msg.data)} bytes, '
                         f'expected {msg.step * msg.height}')
    buf = np.frombuffer(memoryview(msg.data), dtype=np.uint8, count=msg.step * msg.height)
    rows = buf.reshape(msg.height, msg.step)[:, :row]
    arr = rows.view(np.dtype(dtype).newbyteorder('>' if msg.is_bigendian else '<'))
    arr = arr.reshape(msg.height, msg.width, channels)
    return arr[:, :, 0] if channels == 1 else arr


def image_to_rgb(msg) -> np.ndarray:
    """Return an H×W×3 uint8 RGB array for any 8-bit colour or mono image message."""
    image = image_to_numpy(msg)
    if msg.encoding in ('bgr8', 'bgra8'):
        image = image[:, :, 2::-1]
    elif msg.encoding == 'rgba8':
        image = image[:, :, :3]
    elif image.ndim == 2 and image.dtype == np.uint8:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f'cannot use {msg.encoding} images as colour input')
    return np.ascontiguousarray(image)


def numpy_to_image(array: np.ndarray, encoding: str, header=None):
    """Build a sensor_msgs/Image from an H×W(×C) array with the given encoding."""
    from sensor_msgs.msg import Image

    if encoding not in ENCODINGS:
        raise ImageError(f'unsupported image encoding {encoding!r}')
    dtype, channels = ENCODINGS[encoding]
    array = np.ascontiguousarray(array, dtype=dtype)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] != channels:
        raise ImageError(f'array of shape {array.shape} does not fit encoding {encoding}')
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * array.dtype.itemsize
    msg.data = array.tobytes()
    return msg
