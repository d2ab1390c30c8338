"""Training batches from `espinnet dataset` shards (HDF5 or NumPy `.npz`, written by the Rust
simulator).

Every patch is held in memory as float16 after dividing both stacks by the mean of its
reference stack, the normalisation the runtime applies. Batches are random crops with
the symmetries of the physics: flips and transposes (the displacement components change
sign or swap with them) and one frame permutation shared by R and S (S(r) = R(r - d)
holds frame by frame, so the order of the scan positions carries no information the
network may rely on).
"""

from pathlib import Path

import numpy as np
import torch

MAPS = ("dx", "dy", "transmission", "darkfield")
SHARDS = ("shard-*.h5", "shard-*.npz")


def read_shard(path):
    """A shard's arrays by name: reference, sample, the maps and n_scans."""
    names = ("reference", "sample", *MAPS, "n_scans")
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in names}
    import h5py  # only for HDF5 shards: a GPU machine may have numpy alone

    with h5py.File(path, "r") as h:
        return {k: h[k][()] for k in names}


class Pool:
    """Every patch of the shards in `dirs` (one patch size), held on `device`."""

    def __init__(self, dirs, limit=None, device="cpu"):
        refs, samples, maps, n_scans = [], [], [], []
        files = sorted(f for d in dirs for pattern in SHARDS for f in Path(d).glob(pattern))
        if not files:
            raise FileNotFoundError(f"no {' or '.join(SHARDS)} in {dirs}")
        for f in files:
            h = read_shard(f)
            r, s = h["reference"], h["sample"]
            scale = r.mean(axis=(1, 2, 3), keepdims=True)
            refs.append(torch.from_numpy((r / scale).astype(np.float16)).to(device))
            samples.append(torch.from_numpy((s / scale).astype(np.float16)).to(device))
            maps.append(torch.from_numpy(np.stack([h[k] for k in MAPS], 1)).to(device))
            n_scans.append(torch.from_numpy(h["n_scans"]))
            del h, r, s
            if limit and sum(len(x) for x in refs) >= limit:
                break
        self.reference = torch.cat(refs)[:limit]
        self.sample = torch.cat(samples)[:limit]
        self.maps = torch.cat(maps)[:limit]  # [K, 4, P, P]: dx, dy, T, D
        self.n_scans = torch.cat(n_scans)[:limit]

    def __len__(self):
        return len(self.reference)

    @property
    def patch(self):
        return self.reference.shape[-1]

    def batch(self, size, crop, gen: torch.Generator, augment=True):
        """A random batch: reference, sample [B, Nnet, crop, crop], maps [B, 4, crop, crop]."""
        idx = torch.randint(len(self), (size,), generator=gen)
        p = self.patch
        r_out, s_out, m_out = [], [], []
        for i in idx.tolist():
            y, x = (torch.randint(p - crop + 1, (2,), generator=gen).tolist()
                    if crop < p else (0, 0))
            win = (slice(y, y + crop), slice(x, x + crop))
            r = self.reference[i][:, win[0], win[1]].float()
            s = self.sample[i][:, win[0], win[1]].float()
            m = self.maps[i][:, win[0], win[1]].clone()
            if augment:
                flip_x, flip_y, swap, perm = torch.rand(4, generator=gen).tolist()
                if flip_x < 0.5:
                    r, s, m = r.flip(-1), s.flip(-1), m.flip(-1)
                    m[0] = -m[0]
                if flip_y < 0.5:
                    r, s, m = r.flip(-2), s.flip(-2), m.flip(-2)
                    m[1] = -m[1]
                if swap < 0.5:
                    r, s, m = r.transpose(-1, -2), s.transpose(-1, -2), m.transpose(-1, -2)
                    m = m[[1, 0, 2, 3]]
                if perm < 0.5:
                    order = torch.randperm(r.shape[0], generator=gen).to(r.device)
                    r, s = r[order], s[order]
            r_out.append(r)
            s_out.append(s)
            m_out.append(m)
        return torch.stack(r_out), torch.stack(s_out), torch.stack(m_out).contiguous()


class Pools:
    """Several pools, one per directory, whose patch sizes may differ: a batch of crops of
    one size is drawn from the pools whose patches are at least that large, in proportion
    to their patch counts (so larger crops see the interior of larger images)."""

    def __init__(self, dirs, device="cpu"):
        self.pools = [Pool([d], device=device) for d in dirs]
        # Each pool's family: its directory's name less a trailing patch size.
        self.family = [Path(d).name.rstrip("0123456789") for d in dirs]

    def describe(self):
        return ", ".join(f"{len(p)} of {p.patch}^2" for p in self.pools)

    def batch(self, size, crop, gen: torch.Generator):
        """Reference, sample, maps (as `Pool.batch`) and each crop's family."""
        pools = [(p, f) for p, f in zip(self.pools, self.family) if p.patch >= crop]
        if not pools:
            raise ValueError(f"no training patches of {crop}^2 or larger")
        weights = torch.tensor([float(len(p)) for p, _ in pools])
        counts = torch.bincount(torch.multinomial(weights, size, True, generator=gen),
                                minlength=len(pools)).tolist()
        parts = [p.batch(k, crop, gen) for (p, _), k in zip(pools, counts) if k]
        family = [f for (_, f), k in zip(pools, counts) for _ in range(k)]
        return (*(torch.cat(x) for x in zip(*parts)), family)
