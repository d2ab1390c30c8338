"""Train ESPINNet on `espinnet dataset` shards; resumes from RUN/last.pt when present.

    python -m espinnet_train.train --data /work/data/broad /work/data/paper \
        --val /work/data/val --run /work/runs/light --variant light

On a GPU: `--device cuda` (the patches are held there, in float16) and `--minutes` to end
the run, and its learning-rate schedule, on a wall-clock budget (`scripts/gpu-train.sh`).

Each --crops entry SIZE:BATCH is one kind of step; the steps cycle through them, so
`--crops 128:8 256:2` alternates batches of eight 128^2 crops and two 256^2 crops (equal
pixel counts), the latter drawn from --data directories of 256^2 patches or larger.

Loss: mean endpoint error of the flow (Euclidean per pixel, full-resolution pixel units)
at the output and, with halving weights, at each coarser level against the box-averaged
truth, plus 10 x L1(T) + 10 x L1(D). L1-type norms because the errors are heavy-tailed: a
few pixels at object edges would otherwise dominate the gradient, while the targets are
the RMSE over smooth regions and the share of gross errors.
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import Pool, Pools
from .model import VARIANTS, build
from .metrics import evaluate


def level_targets(gt_flow, flows):
    """Truth at each level's resolution, in that level's pixel units."""
    out = []
    for f in flows:
        k = gt_flow.shape[-1] // f.shape[-1]
        out.append(F.avg_pool2d(gt_flow, k) / k if k > 1 else gt_flow)
    return out


def loss_fn(flow, t, d, flows, maps):
    """Each sample's loss [B] (the module docstring's), and its parts averaged over the batch."""
    gt_flow = maps[:, :2]
    epe = lambda a, b: (a - b).square().sum(1).add(1e-6).sqrt().mean((1, 2))  # noqa: E731
    loss_d = epe(flow, gt_flow)
    aux = 0.0
    for i, (f, g) in enumerate(zip(reversed(flows), reversed(level_targets(gt_flow, flows)))):
        k = gt_flow.shape[-1] // f.shape[-1]
        aux = aux + 0.5 ** (i + 1) * epe(f, g) * k  # in full-resolution pixels
    loss_t = (t[:, 0] - maps[:, 2]).abs().mean((1, 2))
    loss_dark = (d[:, 0] - maps[:, 3]).abs().mean((1, 2))
    total = loss_d + aux + 10.0 * loss_t + 10.0 * loss_dark
    parts = dict(epe=loss_d, aux=aux, t=loss_t, d=loss_dark)
    return total, {k: v.mean().item() for k, v in parts.items()}


class FamilyWeights:
    """`--balance`: each sample's loss divided by its family's running mean loss (a family:
    the data directories of one name less a trailing patch size, `paper` and `paper256`),
    scaled so that a family at the families' harmonic-mean loss weighs 1. Without it the
    stress families, whose errors are several times the paper mix's, set the gradient, and
    fine-tuning on them cost the paper mix its accuracy (MODEL_CARD.md, *Training*)."""

    def __init__(self, families, state=None):
        self.loss = dict.fromkeys(families, float("nan")) | (state or {})

    def __call__(self, per_sample, family):
        with torch.no_grad():
            for f in set(family):
                v = per_sample[[g == f for g in family]].mean().item()
                old = self.loss[f]
                self.loss[f] = v if math.isnan(old) else 0.98 * old + 0.02 * v
            known = [v for v in self.loss.values() if not math.isnan(v)]
            scale = len(known) / sum(1.0 / v for v in known)
            w = torch.tensor([scale / self.loss[f] for f in family], device=per_sample.device)
        return (per_sample * w).mean()


def lr_at(step, args, seconds=0.0):
    """Warm-up, then cosine decay over the steps, or over `--minutes` where that ends first
    (`seconds`: the training's wall time so far)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    if args.minutes:
        p = max(p, min(1.0, seconds / (60.0 * args.minutes)))
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * p))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True, help="shard directories")
    ap.add_argument("--val", nargs="+", required=True,
                    help="validation shard directories (fixed), each scored on its own")
    ap.add_argument("--run", required=True, help="run directory (checkpoints, log)")
    ap.add_argument("--variant", default="light", choices=sorted(VARIANTS))
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--crops", nargs="+", default=["64:8"], metavar="SIZE:BATCH",
                    help="crop size (px) and batch size of each kind of step, cycled")
    ap.add_argument("--init", help="start from these weights (a checkpoint) at step 0; "
                    "ignored when RUN/last.pt resumes the run")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="end the run after this much training (wall clock, counted from this "
                    "process's first step; the schedule decays over it); 0: --steps alone")
    ap.add_argument("--every", type=int, default=500, help="steps between checkpoints")
    ap.add_argument("--snapshots", type=int, default=0,
                    help="also keep RUN/step-NNNNNN.pt every this many steps (0: only last.pt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-count", type=int, default=64)
    ap.add_argument("--balance", action="store_true",
                    help="weigh each family of training data alike (FamilyWeights)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    model = build(args.variant).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    crops = [tuple(int(v) for v in c.split(":")) for c in args.crops]
    step = 0
    init_step = 0  # optimiser steps the --init weights had seen, carried into the export
    last = run / "last.pt"
    resumed = last.exists()
    if resumed:
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck["variant"] != args.variant:
            raise SystemExit(f"{last} holds variant {ck['variant']}, not {args.variant}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        step = ck["step"]
        init_step = ck.get("init_step", 0)
        print(f"resumed {last} at step {step}", flush=True)
    elif args.init:
        # Another variant's weights may start this one if every tensor they hold fits; the
        # modules they lack (a refinement level, say) keep their initialisation.
        ck = torch.load(args.init, map_location="cpu", weights_only=False)
        try:
            missing, unexpected = model.load_state_dict(ck["model"], strict=False)
        except RuntimeError as e:
            raise SystemExit(f"{args.init} ({ck['variant']}) does not fit {args.variant}: {e}")
        if unexpected:
            raise SystemExit(f"{args.init} ({ck['variant']}) holds tensors {args.variant} "
                             f"has not: {unexpected}")
        init_step = ck["step"] + ck.get("init_step", 0)
        print(f"initialised from {args.init} ({ck['variant']}, {init_step} steps); "
              f"new: {sorted({k.split('.')[0] for k in missing}) or 'none'}", flush=True)
    (run / "args.json").write_text(json.dumps(vars(args), indent=1))

    pool = Pools(args.data, device=device)
    vals = {Path(d).name: Pool([d], limit=args.val_count, device=device) for d in args.val}
    print(f"training patches: {pool.describe()}; validation: " + ", ".join(
        f"{k} {len(v)} of {v.patch}^2" for k, v in vals.items()), flush=True)
    weights = None
    if args.balance:
        weights = FamilyWeights(sorted(set(pool.family)), ck.get("family_loss") if resumed else None)
    log = open(run / "log.csv", "a")
    if step == 0:
        log.write("step,seconds,lr,loss,epe,aux,t,d\n")
    model.train()
    t0, seen, acc = time.time(), 0, {}
    start = time.time()
    elapsed, out_of_time = 0.0, False
    while step < args.steps and not out_of_time:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args, elapsed)
        crop, batch = crops[step % len(crops)]
        r, s, maps, family = pool.batch(batch, crop, gen)
        flow, t, d, flows = model(r, s, all_levels=True)
        per_sample, parts = loss_fn(flow, t, d, flows, maps)
        loss = weights(per_sample, family) if weights else per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        seen += batch
        elapsed = time.time() - start
        # The unweighted loss, comparable between runs.
        for k, v in dict(loss=per_sample.mean().item(), **parts).items():
            acc[k] = acc.get(k, 0.0) + v
        if step % 50 == 0:
            n = 50
            dt = time.time() - t0
            log.write(f"{step},{dt:.1f},{lr_at(step, args, elapsed):.3g}," + ",".join(
                f"{acc[k] / n:.5f}" for k in ("loss", "epe", "aux", "t", "d")) + "\n")
            log.flush()
            print(f"step {step} {seen / dt:.1f} samples/s " + " ".join(
                f"{k}={v / n:.4f}" for k, v in acc.items()), flush=True)
            acc, t0, seen = {}, time.time(), 0
        out_of_time = bool(args.minutes) and elapsed >= 60.0 * args.minutes
        if step % args.every == 0 or step == args.steps or out_of_time:
            ck = dict(model=model.state_dict(), optimizer=opt.state_dict(), step=step,
                      generator=gen.get_state(), variant=args.variant, init_step=init_step,
                      family_loss=weights.loss if weights else None)
            torch.save(ck, run / "last.tmp")
            (run / "last.tmp").replace(last)
            if args.snapshots and step % args.snapshots == 0:
                torch.save(dict(ck, optimizer=None), run / f"step-{step:06d}.pt")
            m = {k: evaluate(model, v) for k, v in vals.items()}
            model.train()
            with open(run / "val.jsonl", "a") as f:
                f.write(json.dumps(dict(step=step, **m)) + "\n")
            print(f"validation step {step}: {m}", flush=True)


if __name__ == "__main__":
    main()
