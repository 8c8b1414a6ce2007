"""``medseg train``: train a model from a YAML recipe (single process, or several GPUs under torchrun).

Examples::

    medseg train --config training/configs/dcaunet_synapse.yaml --data-root /data/Synapse --output-dir runs/dca
    torchrun --nproc_per_node 4 -m napari_medseg.cli train --config dcaunet_synapse.yaml --data-root /data/Synapse
    medseg train --config runs/dca/recipe.yaml --resume runs/dca/last.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML recipe (a path, or a name in training/configs, e.g. dcaunet_synapse.yaml)")
    parser.add_argument("--data-root", help="dataset folder (overrides data.root in the recipe)")
    parser.add_argument("--output-dir", default=None, help="where checkpoints and logs go (default runs/<recipe name>)")
    parser.add_argument("--resume", help="continue from a last.safetensors written by an earlier run")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps in total")
    parser.add_argument("--time-budget", type=float, help="stop after this many seconds")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (torchrun: one GPU per process)")
    parser.add_argument("--model-config", help="JSON dict merged into model.config, e.g. '{\"dims\": [16, 32, 48, 64]}'")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set train.batch_size=8 (VALUE parsed as YAML)")


def run(args) -> int:
    import yaml

    from napari_medseg.retrain.config import check_positive
    from training import ddp
    from training.engine import Trainer, load_recipe

    check_positive("--time-budget", args.time_budget)  # nan/inf would train forever
    check_positive("--max-steps", args.max_steps, integer=True)
    recipe = load_recipe(args.config)
    if args.data_root:
        recipe["data"]["root"] = str(args.data_root)
    if args.model_config:
        recipe["model"].setdefault("config", {})
        recipe["model"]["config"] = {**(recipe["model"]["config"] or {}), **json.loads(args.model_config)}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        section, name = key.split(".", 1)
        recipe.setdefault(section, {})[name] = yaml.safe_load(value)
    out = Path(args.output_dir) if args.output_dir else Path("runs") / recipe["name"]
    trainer = Trainer(recipe, out, device=args.device, resume=args.resume, max_steps=args.max_steps,
                      time_budget_s=args.time_budget)
    if trainer.is_main:
        print(f"training {recipe['model']['name']} on {len(trainer.train_set)} slices, device {trainer.device}, "
              f"{trainer.dist.world_size} process(es), batch {trainer.global_batch}, "
              f"{trainer.planned_steps} planned steps, starting at step {trainer.step}")
    try:
        summary = trainer.fit()
    finally:
        ddp.cleanup(trainer.dist)
    if trainer.is_main:
        best = f", best val Dice {summary.best_dice:.4f}" if summary.best_dice is not None else ""
        print(f"stopped by {summary.stopped_by} at step {summary.steps} after {summary.seconds:.1f} s, "
              f"loss {summary.final_loss:.4f}{best}; checkpoint {summary.checkpoint}")
    return 0
