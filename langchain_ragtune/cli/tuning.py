"""``ragtune train``: train, validate, evaluate and register a namespace's next adapter.

It can run as its own process on another host (a GPU machine) that reaches the same
PostgreSQL: it reads the dataset from there and writes the adapter folder to
``--adapters-dir`` (a volume the serving hosts read). Light at import.

Example:
    $ ragtune train --namespace conv-26 --max-steps 200 --json
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain_ragtune.cli._common import (add_json_flag, add_namespace_arg, add_quiet_flag,
                                           add_training_args, open_store, parse_namespace,
                                           print_json)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``ragtune train``."""
    p = subparsers.add_parser(
        "train", help="train and register a namespace's next LoRA adapter from its dataset",
        description="Train a LoRA adapter on the namespace's newest dataset (or --dataset), "
                    "validate it against vLLM's limits, evaluate it closed-book against the "
                    "current version (the gate), move it into place atomically and register it "
                    "as 'ready' (or 'rejected'). It does not switch serving unless --publish.")
    add_namespace_arg(p)
    p.add_argument("--dataset", type=int, help="dataset id (default: the newest)")
    add_training_args(p)
    p.add_argument("--batch-size", type=int, help="examples per step (8)")
    p.add_argument("--learning-rate", type=float, help="peak learning rate (1e-3)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train")
    p.add_argument("--adapters-dir",
                   help="where adapter folders go (default RAGTUNE_HOME/adapters)")
    p.add_argument("--no-gate", action="store_true", help="register even if the gate fails")
    p.add_argument("--publish", action="store_true",
                   help="hand a ready version over to serving (or switch the pointer)")
    add_quiet_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from langchain_ragtune.config import ModelConfig
    from langchain_ragtune.tuning.canaries import describe_canaries
    from langchain_ragtune.tuning.gate import GateConfig, describe_knowledge, train_namespace
    from langchain_ragtune.tuning.train import TrainConfig

    model_config = ModelConfig.from_env()
    overrides = {k: v for k, v in {"epochs": args.epochs, "max_steps": args.max_steps,
                                   "batch_size": args.batch_size,
                                   "learning_rate": args.learning_rate,
                                   "device": args.device}.items() if v is not None}
    quiet = args.quiet or args.json
    train_config = TrainConfig.from_env(torch_threads=model_config.torch_threads,
                                        progress=not quiet, **overrides)
    gate_config = GateConfig.from_env(**({"gate": False} if args.no_gate else {}))
    ns = parse_namespace(args.namespace)
    store = open_store()
    try:
        with store.namespace_lock(ns):
            outcome = train_namespace(ns, store=store, dataset_id=args.dataset, mode=args.mode,
                                      train_config=train_config, gate_config=gate_config,
                                      model_config=model_config, adapters_dir=args.adapters_dir,
                                      progress=not quiet)
            status = outcome.record.status
            if args.publish and outcome.passed:
                from langchain_ragtune.jobs.refresh import default_publisher

                default_publisher(store)(outcome.record)
                status = "published"
        rec = outcome.record
        out = {"namespace": list(ns), "status": status, "version": rec.version,
               "adapter_name": rec.name, "path": rec.path, "dataset_id": rec.dataset_id,
               "watermark_seq": rec.watermark_seq, "reason": rec.reason,
               "metrics": {k: v for k, v in outcome.metrics.items() if k != "heldout_sample"}}
        if args.json:
            print_json(out)
        else:
            m = outcome.metrics
            print(f"{rec.name} ({status}) -> {rec.path}\n  {m['steps']} steps, loss "
                  f"{m['train_loss']}, {m['train_seconds']} s on {m['device']}; closed-book "
                  f"{m['closed_book_before']} -> {m['closed_book_after']}, canaries "
                  f"{m['canary_before']} -> {m['canary_after']} ({describe_canaries(m)})"
                  f"\n  {describe_knowledge(m)}"
                  + (f"\n  gate: {rec.reason}" if rec.reason else ""))
        return 0 if outcome.passed else 1
    finally:
        store.close()
