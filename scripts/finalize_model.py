#!/usr/bin/env python3
"""Finalise a training checkpoint into a codec model: drop the optimiser, fit and freeze the
integer entropy tables on the training clips, and write the model (named by its fingerprint
with --name-by-hash, and/or to the path given).

    python scripts/finalize_model.py runs/default.ckpt -o models/default.pt
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vqcodec.model import ModelConfig, VQVAE  # noqa: E402
from vqcodec.modelfile import save_model  # noqa: E402
from vqcodec.train import fit_entropy_tables  # noqa: E402

from train_default import corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--clips", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "clips")
    ap.add_argument("--frames", type=int, default=64, help="frames per clip used to fit the tables")
    ap.add_argument("--name-by-hash", action="store_true", help="also write models/vqcodec-<hash8>.pt")
    args = ap.parse_args()
    ck = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    net = VQVAE(ModelConfig(**ck["config"]))
    net.load_state_dict(ck["state_dict"])
    net.eval()
    t0 = time.time()
    clips, _ = corpus(args.clips, max_frames=args.frames)
    tables = fit_entropy_tables(net, clips)
    meta = dict(ck.get("meta", {}))
    meta["tables"] = f"fitted on {len(clips)} clips, up to {args.frames} frames each, in {time.time() - t0:.0f} s"
    fp = save_model(args.out, net, tables, meta)
    print(f"wrote {args.out} fingerprint {fp.hex()}")
    if args.name_by_hash:
        named = args.out.with_name(f"vqcodec-{fp.hex()[:8]}.pt")
        save_model(named, net, tables, meta)
        print(f"wrote {named}")


if __name__ == "__main__":
    main()
