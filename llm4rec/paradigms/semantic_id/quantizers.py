"""Residual quantizers: a vector -> a short tuple of discrete codes, coarse to fine.

- `rq_kmeans` (residual k-means): level 1 clusters the vectors, level 2 the
  residuals left by level 1, and so on. Snap's GRID found it matches or beats RQ-VAE with no
  training; it is deterministic under its seed.
- `rq_vae` (TIGER, Rajput et al. 2023; the default): an MLP encoder into a small latent space,
  residual quantization there with learned codebooks (k-means initialised, commitment loss,
  straight-through gradients, dead codes reset to live residuals), an MLP decoder back.
- `random_codes`: uniform random codes of the same shape (the `sid_random` ablation).

Each returns a `Quantization`: the codes, and the reconstruction error after each level in the
input space (mean squared error per item, summed over dimensions), `None` where it has no
meaning (random codes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Quantization:
    codes: np.ndarray  # [items, levels] int64
    reconstruction_error: list[float] | None  # after level 1, 2, ... (input space)
    baseline_error: float  # error of predicting every vector by the mean vector (level 0)
    codebooks: list[np.ndarray] | None = None  # rq_kmeans: each level's [K, d] centroids


def _sq_dist(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return (x * x).sum(1)[:, None] - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]


def kmeans(x: np.ndarray, k: int, iters: int = 100, seed: int = 0, n_init: int = 3) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding, the best (lowest within-cluster error) of `n_init`
    seeded restarts. Returns the [k, d] centroids."""
    n = len(x)
    if k > n:
        raise ValueError(f"k-means: codebook size {k} exceeds the {n} vectors to cluster")
    runs = [
        _lloyd(x, k, iters, np.random.default_rng([seed, restart])) for restart in range(n_init)
    ]
    return min(runs, key=lambda c: _sq_dist(x, c).min(1).sum())


def _lloyd(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """One k-means++ seeding and Lloyd iterations; an emptied cluster is reseeded at the point
    farthest from its centroid."""
    n = len(x)
    centroids = np.empty((k, x.shape[1]), dtype=np.float64)
    centroids[0] = x[rng.integers(n)]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        total = d2.sum()
        centroids[j] = x[rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)]
        d2 = np.minimum(d2, ((x - centroids[j]) ** 2).sum(1))
    assign = None
    for _ in range(iters):
        dist = _sq_dist(x, centroids)
        new = dist.argmin(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = assign == j
            if members.any():
                centroids[j] = x[members].mean(0)
            else:  # reseed at the worst-fitted point
                far = dist[np.arange(n), assign].argmax()
                centroids[j] = x[far]
                assign[far] = j
    return centroids


def rq_kmeans(
    x: np.ndarray, levels: int, codebook_size: int, iters: int = 100, seed: int = 0
) -> Quantization:
    x = np.asarray(x, dtype=np.float64)
    residual = x.copy()
    codes = np.empty((len(x), levels), dtype=np.int64)
    errors, books = [], []
    for level in range(levels):
        centroids = kmeans(residual, codebook_size, iters, seed + level)
        codes[:, level] = _sq_dist(residual, centroids).argmin(1)
        residual = residual - centroids[codes[:, level]]
        errors.append(float((residual**2).sum(1).mean()))
        books.append(centroids)
    return Quantization(codes, errors, float(((x - x.mean(0)) ** 2).sum(1).mean()), books)


def random_codes(n: int, levels: int, codebook_size: int, seed: int = 0) -> Quantization:
    codes = np.random.default_rng(seed).integers(0, codebook_size, size=(n, levels), dtype=np.int64)
    return Quantization(codes, None, 0.0)


def rq_vae(
    x: np.ndarray,
    levels: int,
    codebook_size: int,
    hidden: tuple[int, ...] = (512, 256, 128),
    latent_dim: int = 32,
    epochs: int = 500,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    beta: float = 0.25,
    kmeans_iters: int = 100,
    seed: int = 0,
) -> Quantization:
    """Train an RQ-VAE on `x` ([items, d]) and return its codes and per-level reconstruction error
    (the decoder applied to the sum of the first l code vectors)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    data = torch.as_tensor(np.asarray(x, dtype=np.float32))

    def mlp(dims):
        layers = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers[:-1])

    dims = [data.shape[1], *hidden, latent_dim]
    encoder, decoder = mlp(dims), mlp(dims[::-1])
    # every level's codebook starts as residual k-means over the initial latents
    with torch.no_grad():
        init = rq_kmeans(encoder(data).numpy(), levels, codebook_size, kmeans_iters, seed)
    # [L, K, latent]
    codebooks = nn.Parameter(torch.as_tensor(np.stack(init.codebooks), dtype=torch.float32))
    params = [*encoder.parameters(), *decoder.parameters(), codebooks]
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)

    def quantize(z):
        residual, chosen, codes, commit = z, [], [], 0.0
        for level in range(levels):
            index = torch.cdist(residual, codebooks[level]).argmin(1)
            vector = codebooks[level][index]
            commit = (
                commit
                + ((residual.detach() - vector) ** 2).mean()
                + beta * ((residual - vector.detach()) ** 2).mean()
            )
            chosen.append(vector)
            codes.append(index)
            residual = residual - vector.detach()
        return torch.stack(codes, 1), chosen, commit

    for _ in range(epochs):
        used = torch.zeros((levels, codebook_size), dtype=torch.bool)
        for batch in torch.randperm(len(data), generator=generator).split(batch_size):
            z = encoder(data[batch])
            codes, chosen, commit = quantize(z)
            quantized = torch.stack(chosen).sum(0)
            z_q = z + (quantized - z).detach()  # straight-through
            loss = ((decoder(z_q) - data[batch]) ** 2).sum(1).mean() + commit
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            used[torch.arange(levels)[:, None], codes.T] = True
        # dead-code reset: an unused code moves onto a live residual of its level
        with torch.no_grad():
            if not used.all():
                z = encoder(data)
                residual = z
                for level in range(levels):
                    dead = (~used[level]).nonzero().flatten()
                    if len(dead):
                        pick = torch.randint(len(data), (len(dead),), generator=generator)
                        codebooks[level, dead] = residual[pick]
                    residual = (
                        residual
                        - codebooks[level][torch.cdist(residual, codebooks[level]).argmin(1)]
                    )
    with torch.no_grad():
        codes, chosen, _ = quantize(encoder(data))
        errors, partial = [], torch.zeros_like(chosen[0])
        for vector in chosen:
            partial = partial + vector
            errors.append(float(((decoder(partial) - data) ** 2).sum(1).mean()))
    baseline = float(((data - data.mean(0)) ** 2).sum(1).mean())
    return Quantization(codes.numpy().astype(np.int64), errors, baseline)
