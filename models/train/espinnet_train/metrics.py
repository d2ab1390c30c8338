"""Accuracy against simulated truth, the same figures the tracker's tests report."""

import torch


def summarise(flow, t, d, maps, border):
    """RMSE of dx, dy (px per axis), share of pixels > 1 px off, RMSE of T and D,
    over the interior (a border of `border` px excluded, as for the tracker)."""
    b = slice(border, -border or None)
    err = (flow - maps[:, :2])[..., b, b]
    dist = err.square().sum(1).sqrt()
    return dict(
        rmse_px=err.square().mean().sqrt().item(),
        gross=(dist > 1.0).float().mean().item(),
        rmse_t=(t[:, 0] - maps[:, 2])[..., b, b].square().mean().sqrt().item(),
        rmse_d=(d[:, 0] - maps[:, 3])[..., b, b].square().mean().sqrt().item(),
    )


@torch.no_grad()
def evaluate(model, pool, border=10, batch=8):
    model.eval()
    outs = []
    for i in range(0, len(pool), batch):
        r = pool.reference[i:i + batch].float()
        s = pool.sample[i:i + batch].float()
        flow, t, d = model(r, s)
        outs.append((flow, t, d))
    flow, t, d = (torch.cat(x) for x in zip(*outs))
    return summarise(flow, t, d, pool.maps[:len(flow)], border)
