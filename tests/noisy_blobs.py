"""Shared test data: Gaussian blobs per class with a known fraction of flipped labels."""

import torch


def noisy_blobs(n: int, d: int, c: int, *, noise: float = 0.2, seed: int = 0):
    """Returns (x [n, d], noisy labels [n], is_noisy [n] bool); every flip is to another class."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=g) * 1.5
    y = torch.randint(0, c, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    is_noisy = torch.rand(n, generator=g) < noise
    y_noisy = torch.where(is_noisy, (y + torch.randint(1, c, (n,), generator=g)) % c, y)
    return x, y_noisy, is_noisy


class BlobDataset(torch.utils.data.Dataset):
    """``noisy_blobs`` as a Dataset; ``item(x, y, i)`` shapes one sample (tuple or dict)."""

    def __init__(self, n: int, d: int, c: int, item=lambda x, y, i: (x, y, i)):
        self.x, self.y, self.noisy = noisy_blobs(n, d, c)
        self.item = item

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.item(self.x[i], self.y[i], i)
