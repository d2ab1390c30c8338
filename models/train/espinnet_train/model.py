"""ESPINNet (Qiao et al., J. Synchrotron Rad. 33, 467-480, 2026), re-implemented.

Coarse-to-fine flow estimation between a sample stack S and a reference stack R, both
[B, Nnet, H, W], already divided by the mean of R. At every level the reference features
are warped by the current flow (bilinear, border padding), a 7x7 cost volume is built
against the sample features, and a per-level estimator predicts the new flow (absolute,
not a residual) from [flow, cost]. Convention: S(r) = R(r - d), channel 0 = dx (columns),
1 = dy (rows), in input pixels. T and D come from small full-resolution heads on the
scan mean and scan std of S and of R at r - d.

Variants, chosen by name (see VARIANTS):
- "reference": the published widths, six levels down to full resolution.
- "light": stops the flow at H/2 and upsamples it, with narrow layers everywhere. Most of
  the reference model's compute sits at full resolution; this is where it saves.
- "light-nonorm" (shipped): the light widths without BatchNorm, whose running statistics
  did not describe the broad mix's inputs; unit-norm features in the cost volume instead.
- "light-nonorm-fr": light-nonorm plus a small full-resolution refinement of the flow.
"""

from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

SEARCH = 3  # cost-volume search range (px at the level's resolution): 7x7 offsets


@dataclass(frozen=True)
class Variant:
    name: str
    nnet: int
    pyramid: tuple  # channels of stride-2 stages H/2, H/4, ...
    full_res: int  # channels of the full-resolution feature branch; 0 = no full-res level
    estimator: tuple  # hidden widths of the per-level flow estimators
    estimator_fine: tuple  # hidden widths at the finest level (where compute costs most)
    heads: tuple  # hidden widths of the T and D heads
    search_fine: int = SEARCH  # cost-volume search range at the finest level (px there)
    batch_norm: bool = True  # False: convolutions with bias and no normalisation
    # Without BatchNorm: the cost volume of unit-norm features (cosine similarities), then
    # standardised over the offsets at each pixel. Without it the shift sits in a small
    # modulation of a large common level, and the flow did not learn at all (400 steps:
    # EPE 0.42 px against 0.46 px for zero flow; with it 0.19 px, BatchNorm 0.20 px).
    unit_features: bool = False
    # A full-resolution refinement after the upsampled H/2 flow (variants without a
    # full-resolution level): its own features, a cost volume of search `refine_search`, and
    # an estimator of these hidden widths that adds a correction (zero at initialisation, so
    # it can be trained on top of weights that lack it). () = none.
    refine: tuple = ()
    refine_features: int = 8
    refine_search: int = 1

    @property
    def size_multiple(self) -> int:
        return 2 ** len(self.pyramid)


VARIANTS = {
    "reference": Variant(
        "reference", 20, (32, 64, 96, 128, 192), 20,
        (64, 128, 96, 64, 32), (64, 128, 96, 64, 32), (64, 128, 96, 64, 32)),
    "light": Variant(
        "light", 20, (16, 24, 32, 48), 0,
        (48, 32, 24), (24, 16), (12, 12), search_fine=2),
    # The light variant without BatchNorm: its running statistics did not describe the
    # broad mix's inputs (see models/MODEL_CARD.md, Limitations).
    "light-nonorm": Variant(
        "light-nonorm", 20, (16, 24, 32, 48), 0,
        (48, 32, 24), (24, 16), (12, 12), search_fine=2, batch_norm=False,
        unit_features=True),
    # light-nonorm with a full-resolution refinement: the H/2 flow, upsampled, cannot follow
    # a displacement ridge a few pixels wide (see models/MODEL_CARD.md, Limitations).
    "light-nonorm-fr": Variant(
        "light-nonorm-fr", 20, (16, 24, 32, 48), 0,
        (48, 32, 24), (24, 16), (12, 12), search_fine=2, batch_norm=False,
        unit_features=True, refine=(16, 8)),
}


def conv_block(cin, cout, stride=1, norm=True):
    if not norm:
        # Without normalisation the scale must come from the initialisation: PyTorch's
        # default shrinks the activations ~3x per layer, which leaves the coarsest features
        # at std 0.02 and the cost volume at 2e-4. Kaiming for LeakyReLU(0.1) keeps them
        # near 1 (cost std 0.4); alone it did not make the flow learn (see unit_features).
        conv = nn.Conv2d(cin, cout, 3, stride, 1)
        nn.init.kaiming_normal_(conv.weight, a=0.1, nonlinearity="leaky_relu")
        nn.init.zeros_(conv.bias)
        return nn.Sequential(conv, nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


def mlp(cin, hidden, cout, norm=True):
    layers, c = [], cin
    for h in hidden:
        layers.append(conv_block(c, h, norm=norm))
        c = h
    layers.append(nn.Conv2d(c, cout, 1))
    return nn.Sequential(*layers)


def warp(x, flow):
    """x sampled at r - flow(r): bilinear, border padding, align_corners (pixel centres).

    Pixel coordinates are ranges over the flow's own height and width, so the exported graph
    keeps H and W dynamic: ONNX Range writes each coordinate once, where the cumulative sums
    of ones used before cost ONNX Runtime's CUDA CumSum a read of every element's whole
    prefix (the same grid, so the same outputs to the bit). The grid stays fp32 whatever x
    is (an fp16 grid is off by up to 0.25 px at 2048 px).
    """
    h, w = flow.shape[2], flow.shape[3]
    xs = torch.arange(w, dtype=torch.float32, device=flow.device).view(1, 1, -1)
    ys = torch.arange(h, dtype=torch.float32, device=flow.device).view(1, -1, 1)
    w1, h1 = xs[..., -1:], ys[:, -1:, :]
    gx = (xs - flow[:, 0].float()) * 2.0 / w1.clamp(min=1.0) - 1.0
    gy = (ys - flow[:, 1].float()) * 2.0 / h1.clamp(min=1.0) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


def channel_mean(x):
    """Mean over axis 1 as a 1x1 convolution: ONNX Runtime's Conv is several times faster
    than its ReduceMean over the channel axis of an NCHW tensor."""
    c = int(x.shape[1])  # static: the weight must be a constant of the exported graph
    return F.conv2d(x, torch.full((1, c, 1, 1), 1.0 / c, dtype=x.dtype, device=x.device))


def scan_stats(x):
    """Mean and standard deviation over the scan axis, [B, 2, H, W]."""
    mean = channel_mean(x)
    var = (channel_mean(x * x) - mean * mean).clamp(min=0.0)
    return torch.cat((mean, var.sqrt()), 1)


def unit_norm(x, eps=1e-4):
    """Features scaled to unit RMS over channels at each pixel."""
    return x * torch.rsqrt(channel_mean(x * x) + eps)


def cost_volume(a, b, search=SEARCH, unit=False):
    """Channel-mean correlation of a with b shifted by (dy, dx) in [-search, search]^2,
    row-major over (dy, dx), then LeakyReLU(0.01); with `unit`, of unit-norm features, and
    standardised over the offsets at each pixel. The channel means of one row of offsets
    are one grouped 1x1 convolution (few large kernels run faster than many small ones)."""
    if unit:
        a, b = unit_norm(a), unit_norm(b)
    c, n = int(a.shape[1]), 2 * search + 1
    bp = F.pad(b, (search, search, search, search))
    weight = torch.full((n, c, 1, 1), 1.0 / c, dtype=a.dtype, device=a.device)
    out = []
    for dy in range(n):
        # Static slice ends (negative or None) keep H and W dynamic in the export.
        band = bp[:, :, dy:dy - n + 1 or None]
        prods = [a * band[..., dx:dx - n + 1 or None] for dx in range(n)]
        out.append(F.conv2d(torch.cat(prods, 1), weight, groups=n))
    cost = F.leaky_relu(torch.cat(out, 1), 0.01)
    if unit:
        cost = cost - channel_mean(cost)
        cost = cost * torch.rsqrt(channel_mean(cost * cost) + 1e-6)
    return cost


class Upsample(nn.Module):
    """Flow x2: nearest, a depthwise 3x3 smoothing (learned), values doubled (pixel units)."""

    def __init__(self):
        super().__init__()
        self.smooth = nn.Conv2d(2, 2, 3, 1, 1, groups=2, bias=False)
        with torch.no_grad():
            self.smooth.weight.fill_(1.0 / 9.0)

    def forward(self, flow):
        return 2.0 * self.smooth(F.interpolate(flow, scale_factor=2.0, mode="nearest"))


class ESPINNet(nn.Module):
    def __init__(self, variant: Variant):
        super().__init__()
        self.variant = variant
        stages, c, bn = [], variant.nnet, variant.batch_norm
        for ch in variant.pyramid:
            stages.append(nn.Sequential(conv_block(c, ch, 2, bn), conv_block(ch, ch, norm=bn)))
            c = ch
        self.stages = nn.ModuleList(stages)
        self.full = (nn.Sequential(conv_block(variant.nnet, variant.full_res, norm=bn),
                                   conv_block(variant.full_res, variant.full_res, norm=bn))
                     if variant.full_res else None)
        n_levels = len(variant.pyramid) + (1 if variant.full_res else 0)
        self.searches = [SEARCH] * (n_levels - 1) + [variant.search_fine]
        self.estimators = nn.ModuleList(
            mlp(2 + (2 * r + 1) ** 2,
                variant.estimator_fine if i == n_levels - 1 else variant.estimator, 2, bn)
            for i, r in enumerate(self.searches))
        self.up = Upsample()
        if variant.refine:
            rf, rs = variant.refine_features, variant.refine_search
            self.refine_features = nn.Sequential(conv_block(variant.nnet, rf, norm=bn),
                                                 conv_block(rf, rf, norm=bn))
            self.refine = mlp(2 + (2 * rs + 1) ** 2, variant.refine, 2, bn)
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)
        self.t_head = mlp(2, variant.heads, 1, bn)
        self.d_head = mlp(2, variant.heads, 1, bn)

    def features(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        feats = feats[::-1]  # coarsest first
        return feats

    def forward(self, reference, sample, all_levels: bool = False):
        fr, fs = self.features(reference), self.features(sample)
        if self.full is not None:
            fr.append(self.full(reference))
            fs.append(self.full(sample))
        flows, flow = [], None
        for level, (r, s) in enumerate(zip(fr, fs)):
            if flow is None:
                flow = torch.zeros_like(s[:, :2])
                rw = r
            else:
                flow = self.up(flow)
                rw = warp(r, flow)
            cost = cost_volume(s, rw, self.searches[level], self.variant.unit_features)
            flow = self.estimators[level](torch.cat((flow, cost), 1))
            flows.append(flow)
        if self.full is None:  # the finest level was H/2
            flow = self.up(flow)
        if self.variant.refine:
            rw = warp(self.refine_features(reference), flow)
            cost = cost_volume(self.refine_features(sample), rw, self.variant.refine_search,
                               self.variant.unit_features)
            flow = flow + self.refine(torch.cat((flow, cost), 1))
        # Scan mean and std of R at r - d: the statistics are warped rather than the whole
        # stack (two channels instead of Nnet), the same quantity up to interpolation.
        s_stats = scan_stats(sample)
        r_stats = warp(scan_stats(reference), flow)
        t = self.t_head(torch.cat((s_stats[:, :1], r_stats[:, :1]), 1))
        d = self.d_head(torch.cat((s_stats[:, 1:], r_stats[:, 1:] * t), 1))
        if all_levels:
            return flow, t, d, flows
        return flow, t, d


def build(name: str) -> ESPINNet:
    return ESPINNet(VARIANTS[name])


def describe(v: Variant) -> dict:
    d = asdict(v)
    d["size_multiple"] = v.size_multiple
    return d
