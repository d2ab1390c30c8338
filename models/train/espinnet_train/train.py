"""Train ESPINNet on `espinnet dataset` shards; resumes from RUN/last.pt when present.

    python -m espinnet_train.train --data /work/data/broad /work/data/paper \
        --val /work/data/val --run /work/runs/light --variant light

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

from .data import Pool
from .model import build
from .metrics import evaluate


def level_targets(gt_flow, flows):
    """Truth at each level's resolution, in that level's pixel units."""
    out = []
    for f in flows:
        k = gt_flow.shape[-1] // f.shape[-1]
        out.append(F.avg_pool2d(gt_flow, k) / k if k > 1 else gt_flow)
    return out


def loss_fn(flow, t, d, flows, maps):
    gt_flow = maps[:, :2]
    epe = lambda a, b: (a - b).square().sum(1).add(1e-6).sqrt().mean()  # noqa: E731
    loss_d = epe(flow, gt_flow)
    aux = 0.0
    for i, (f, g) in enumerate(zip(reversed(flows), reversed(level_targets(gt_flow, flows)))):
        k = gt_flow.shape[-1] // f.shape[-1]
        aux = aux + 0.5 ** (i + 1) * epe(f, g) * k  # in full-resolution pixels
    loss_t = (t[:, 0] - maps[:, 2]).abs().mean()
    loss_dark = (d[:, 0] - maps[:, 3]).abs().mean()
    total = loss_d + aux + 10.0 * loss_t + 10.0 * loss_dark
    return total, dict(epe=loss_d.item(), aux=float(aux), t=loss_t.item(), d=loss_dark.item())


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * p))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", required=True, help="shard directories")
    ap.add_argument("--val", required=True, help="validation shard directory (fixed)")
    ap.add_argument("--run", required=True, help="run directory (checkpoints, log)")
    ap.add_argument("--variant", default="light", choices=["light", "light-nonorm", "reference"])
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, default=500, help="steps between checkpoints")
    ap.add_argument("--snapshots", type=int, default=0,
                    help="also keep RUN/step-NNNNNN.pt every this many steps (0: only last.pt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-count", type=int, default=64)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    model = build(args.variant)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    last = run / "last.pt"
    if last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck["variant"] != args.variant:
            raise SystemExit(f"{last} holds variant {ck['variant']}, not {args.variant}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        step = ck["step"]
        print(f"resumed {last} at step {step}", flush=True)
    (run / "args.json").write_text(json.dumps(vars(args), indent=1))

    pool = Pool(args.data)
    val = Pool([args.val], limit=args.val_count)
    print(f"{len(pool)} training patches of {pool.patch}^2, {len(val)} validation", flush=True)
    log = open(run / "log.csv", "a")
    if step == 0:
        log.write("step,seconds,lr,loss,epe,aux,t,d\n")
    model.train()
    t0, seen, acc = time.time(), 0, {}
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        r, s, maps = pool.batch(args.batch, args.crop, gen)
        flow, t, d, flows = model(r, s, all_levels=True)
        loss, parts = loss_fn(flow, t, d, flows, maps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        seen += args.batch
        for k, v in dict(loss=loss.item(), **parts).items():
            acc[k] = acc.get(k, 0.0) + v
        if step % 50 == 0:
            n = 50
            dt = time.time() - t0
            log.write(f"{step},{dt:.1f},{lr_at(step, args):.3g}," + ",".join(
                f"{acc[k] / n:.5f}" for k in ("loss", "epe", "aux", "t", "d")) + "\n")
            log.flush()
            print(f"step {step} {seen / dt:.1f} samples/s " + " ".join(
                f"{k}={v / n:.4f}" for k, v in acc.items()), flush=True)
            acc, t0, seen = {}, time.time(), 0
        if step % args.every == 0 or step == args.steps:
            ck = dict(model=model.state_dict(), optimizer=opt.state_dict(), step=step,
                      generator=gen.get_state(), variant=args.variant)
            torch.save(ck, run / "last.tmp")
            (run / "last.tmp").replace(last)
            if args.snapshots and step % args.snapshots == 0:
                torch.save(dict(ck, optimizer=None), run / f"step-{step:06d}.pt")
            m = evaluate(model, val)
            model.train()
            with open(run / "val.jsonl", "a") as f:
                f.write(json.dumps(dict(step=step, **m)) + "\n")
            print(f"validation step {step}: {m}", flush=True)


if __name__ == "__main__":
    main()
