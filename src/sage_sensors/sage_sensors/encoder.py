"""A small convolutional autoencoder whose latent is a learned camera feature.

ROS-free. ``FrameEncoder.encode(image)`` turns an RGB uint8 frame of any size
into a ``latent``-float vector and its reconstruction error; the error,
against the error the model had on held-out frames when it was trained, says
how familiar the scene is (a black, blurred or never-seen view reconstructs
badly), which the camera node turns into trust. ``fit`` trains on recorded
frames (the sleep node does this at night), ``save`` writes one file
atomically, ``load`` verifies it, and ``EncoderFile`` hot-reloads a file that
changed while keeping the old model if the new one is bad.
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import torch
from torch import nn

FORMAT = 'sage-frame-encoder-1'


class _AE(nn.Module):
    def __init__(self, latent: int, size: int):
        super().__init__()
        self.size = size
        s = size // 16
        self.enc = nn.Sequential(
            nn.Conv2d(3, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * s * s, latent), nn.Tanh())
        self.dec = nn.Sequential(
            nn.Linear(latent, 32 * s * s), nn.ReLU(), nn.Unflatten(1, (32, s, s)),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(16, 3, 4, 2, 1), nn.Sigmoid())

    def forward(self, x):
        z = self.enc(x)
        return z, self.dec(z)


class FrameEncoder:
    """Convolutional autoencoder over ``size``×``size`` RGB thumbnails."""

    def __init__(self, latent: int = 32, size: int = 64, seed: int = 0):
        if size % 16 or size < 16:
            raise ValueError(f'size must be a multiple of 16, got {size}')
        torch.manual_seed(seed)
        self.latent, self.size = latent, size
        self.model = _AE(latent, size).eval()
        self.ref_error = None        # median held-out reconstruction error after fit
        self.meta: dict = {}

    def preprocess(self, images) -> torch.Tensor:
        """RGB uint8 H×W×3 frames (any size) -> float tensor [N, 3, size, size]."""
        thumbs = []
        for img in images:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f'expected H×W×3 uint8, got {img.shape} {img.dtype}')
            thumbs.append(cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA))
        x = np.stack(thumbs).astype(np.float32) / 255.0
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def encode_batch(self, images):
        """Return (latents [N, latent] float32, reconstruction MSE [N])."""
        x = self.preprocess(images)
        z, y = self.model(x)
        err = ((y - x) ** 2).mean(dim=(1, 2, 3))
        return z.numpy().astype(np.float32), err.numpy()

    def encode(self, image):
        """Return (latent float32 vector, reconstruction MSE) for one frame."""
        z, err = self.encode_batch([image])
        return z[0], float(err[0])

    def error_ratio(self, err: float) -> float:
        """Reconstruction error relative to the held-out error at training (1 = typical)."""
        return err / self.ref_error if self.ref_error else 1.0

    def fit(self, frames, epochs: int = 20, batch: int = 32, lr: float = 2e-3,
            val_fraction: float = 0.2, time_limit_s: float = 120.0, seed: int = 0) -> dict:
        """Train on RGB frames; set the reference error from held-out frames; return stats."""
        x = self.preprocess(frames)
        if len(x) < 4:
            raise ValueError(f'need at least 4 frames to train, got {len(x)}')
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(x), generator=g)
        n_val = max(1, int(len(x) * val_fraction))
        val, train = x[order[:n_val]], x[order[n_val:]]
        opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        start, losses = time.monotonic(), []
        self.model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(train), generator=g).split(batch):
                xb = train[idx]
                xb = torch.where(torch.rand(len(xb), 1, 1, 1, generator=g) < 0.5,
                                 xb, xb.flip(3))          # mirror: same scene, new view
                loss = ((self.model(xb)[1] - xb) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            if time.monotonic() - start > time_limit_s:
                break
        self.model.eval()
        with torch.no_grad():
            val_err = ((self.model(val)[1] - val) ** 2).mean(dim=(1, 2, 3))
        self.ref_error = float(val_err.median())
        self.meta = {'frames': len(x), 'train_loss': losses[-1], 'val_error': self.ref_error,
                     'seconds': round(time.monotonic() - start, 2)}
        return dict(self.meta)

    def to_blob(self) -> dict:
        """Everything the encoder is, as tensors and plain values (torch.save-able)."""
        return {'format': FORMAT, 'latent': self.latent, 'size': self.size,
                'ref_error': self.ref_error, 'meta': dict(self.meta),
                'state': {k: v.detach().clone() for k, v in self.model.state_dict().items()}}

    @classmethod
    def from_blob(cls, blob, source: str = 'encoder') -> 'FrameEncoder':
        """Rebuild and check an encoder from ``to_blob`` output; ValueError if unusable."""
        if not isinstance(blob, dict) or blob.get('format') != FORMAT:
            raise ValueError(f'{source}: not a {FORMAT} file')
        try:
            enc = cls(int(blob['latent']), int(blob['size']))
            enc.model.load_state_dict(blob['state'])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(f'{source}: bad frame encoder ({exc})') from exc
        enc.ref_error, enc.meta = blob.get('ref_error'), dict(blob.get('meta') or {})
        z, err = enc.encode(np.full((enc.size, enc.size, 3), 128, np.uint8))
        if not (np.isfinite(z).all() and np.isfinite(err)):
            raise ValueError(f'{source}: model gives non-finite output')
        return enc

    def save(self, path: str) -> None:
        """Write the model to ``path`` atomically (temporary file + rename)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f'{path}.{os.getpid()}.tmp'
        torch.save(self.to_blob(), tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> 'FrameEncoder':
        """Load and verify a saved encoder (or a sleep checkpoint's weights.pt)."""
        try:
            blob = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise ValueError(f'{path}: not a frame encoder file ({exc})') from exc
        return cls.from_blob(blob, path)


class EncoderFile:
    """A FrameEncoder loaded from a file and reloaded when the file changes."""

    def __init__(self, path: str):
        self.path = path
        self.encoder: FrameEncoder | None = None
        self.error = ''
        self._stamp = None
        self.poll()

    def poll(self) -> bool:
        """Reload if the file changed; True when a new model was loaded.

        A missing or bad file keeps the current model and sets ``error``.
        """
        try:
            st = os.stat(self.path)
        except OSError:
            self.error = f'encoder file {self.path} does not exist'
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.encoder = FrameEncoder.load(self.path)
        except ValueError as exc:
            self.error = str(exc)
            return False
        self.error = ''
        return True
