"""A small real training target for testing the consolidation machinery."""

import numpy as np
import torch
from sage_sleep.consolidate import Evaluation


class LinearTarget:
    """Fit y = X w by gradient descent; score = -MSE on held-out rows."""

    name = 'coherence'
    min_gain = 1e-3

    def __init__(self, seed=0, n=512, noise=0.1, lr=0.05, regression_penalty=0.0):
        rng = np.random.default_rng(seed)
        self.w_true = rng.normal(size=8).astype(np.float32)
        x = rng.normal(size=(n, 8)).astype(np.float32)
        y = x @ self.w_true + noise * rng.normal(size=n).astype(np.float32)
        self.train_xy = (torch.from_numpy(x[: n // 2]), torch.from_numpy(y[: n // 2]))
        self.val_xy = (torch.from_numpy(x[n // 2:]), torch.from_numpy(y[n // 2:]))
        self.lr = lr
        self.regression_penalty = regression_penalty

    def select(self, budget):
        return self.train_xy

    def augment(self, data):
        x, y = data
        return torch.cat([x, x + 0.01 * torch.randn_like(x)]), torch.cat([y, y])

    def train(self, state, data, budget_s, progress):
        w = state['w'].clone().requires_grad_(True)
        x, y = data
        for i in range(50):
            loss = ((x @ w - y) ** 2).mean()
            (g,) = torch.autograd.grad(loss, w)
            with torch.no_grad():
                w -= self.lr * g
            progress((i + 1) / 50)
        return {'w': w.detach()}

    def evaluate(self, state, data):
        x, y = self.val_xy
        mse = float(((x @ state['w'] - y) ** 2).mean())
        regression = -self.regression_penalty * float(state['w'].abs().sum())
        return Evaluation(score=-mse, regression=regression, metrics={'val_mse': mse})
