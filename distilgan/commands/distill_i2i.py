"""``distilgan distill-i2i``: train a feed-forward translator on a teacher's edit pairs.

    distilgan pairs --teacher SPEC --edit automobile:truck --per-edit 5000 --out PAIRS
    distilgan distill-i2i --data PAIRS --out RUN [--ngf 32] [--separable] [--no-filtered] [options]

A light U-Net (``models/translator.py``) learns what the teacher's slow latent edit does, from the
(source, edited) pairs of a pair set, by the one training loop (resume, EMA, grids, in-loop metrics)
with pix2pix's objective plus D-feature matching (``train/i2i_objective.py``). Settings resolve as in
``distill``: options > --config file > the run being resumed > defaults; RUN/config.yaml records them.
"""

from __future__ import annotations

import argparse
from typing import Any

from distilgan.errors import UserError

KIND = "distill-i2i"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        KIND,
        help="train an image-to-image student on a teacher's edit pairs",
        description="Train a U-Net translator (pix2pix-style, light) on the (source, edited) pairs of `distilgan "
        "pairs`: L1 + conditional PatchGAN + D-feature matching, by the one training loop. The set's classifier "
        "filter is applied unless --no-filtered; its last --holdout pairs are kept out for the grid and metrics.",
    )
    from distilgan.train.config import add_config_options

    parser.add_argument("--config", help="YAML file of settings (keys as the options, flat or by section)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where its state stops")
    add_config_options(parser, KIND)
    parser.set_defaults(func=run)


def build_networks(config: Any, store: Any) -> tuple[Any, Any]:
    """The translator and its PatchGAN discriminator for a pair set, from the run's model section."""
    from distilgan.models.translator import PatchDiscriminator, UNetTranslator

    model = config.model
    generator = UNetTranslator(resolution=store.resolution, channels=store.channels, ngf=model.ngf, depth=model.depth,
                               separable=model.separable, norm=model.norm, num_edits=len(store.edits),
                               edit_names=list(store.edit_names), class_names=store.class_names,
                               edits=[dict(e) for e in store.edits])
    options = {} if model.d_layers is None else {"n_layers": model.d_layers}
    discriminator = PatchDiscriminator(resolution=store.resolution, channels=store.channels, ndf=model.ndf,
                                       num_edits=len(store.edits), **options)
    return generator, discriminator


def run(args: argparse.Namespace) -> int:
    import torch

    from distilgan.store.pairs import PairStore
    from distilgan.train.config import KINDS, save_config
    from distilgan.train.distributed import setup_distributed, teardown_distributed
    from distilgan.train.i2i_data import PairBatches, PairInputs, split_pairs
    from distilgan.train.i2i_objective import I2IObjective
    from distilgan.train.loop_metrics import parse_metrics
    from distilgan.train.run_options import check_same_data, resolve_command_run, train_to_the_end
    from distilgan.train.training_loop import Trainer

    config, run_dir, state = resolve_command_run(args, KIND)
    if not config.data.data:
        raise UserError("no pair set given (add --data PAIRS, made by distilgan pairs)")
    from distilgan.utils import argtypes

    argtypes.refuse_unless(args, "--min-confidence", config.data.filtered,
                           "sets the filter's threshold, and --no-filtered trains on every pair")
    if config.data.min_confidence is not None and not config.data.filtered:  # e.g. both in a --config file
        raise UserError("min_confidence sets the filter's threshold, and filtered: false trains on every pair (drop one)")
    if config.data.min_confidence is not None and config.data.min_confidence > 1:
        raise UserError(f"--min-confidence is a softmax probability in [0, 1], got {config.data.min_confidence:g}")
    store = PairStore.open(config.data.data)
    check_same_data(config, state, store.manifest)
    split = split_pairs(store, config.data.holdout, config.data.filtered, config.data.min_confidence)
    names = parse_metrics(config.loop.metrics, KINDS[KIND].metrics)  # the kind's own list, defined once
    if config.loop.metric_classifier and "flip" not in names:
        raise UserError("--metric-classifier judges the in-loop 'flip' metric; add flip to --metrics or leave it out")

    dist = setup_distributed(config.loop.device)
    try:
        torch.manual_seed(config.loop.seed)  # same initial weights on every rank
        generator, discriminator = build_networks(config, store)
        objective = I2IObjective(generator, discriminator, **vars(config.objective))
        source = PairBatches(split.train_sources, split.train_targets, split.train_edits, config.loop.batch_size,
                             config.loop.seed, dist, mirror=config.data.mirror)
        metrics = None
        if names:
            from distilgan.train.i2i_metrics import I2IMetrics

            metrics = I2IMetrics(names, config.loop.metric_n, run_dir, split, dist.device,
                                 judge=config.loop.metric_classifier)
        trainer = Trainer(config, generator, discriminator, objective, source, run_dir, dist, name=KIND,
                          metrics=metrics, inputs=PairInputs(split, config.loop.seed))
        if state is not None:
            trainer.load_state_dict(state)
        if dist.is_main:
            save_config(config, run_dir / "config.yaml")
            about = split.description
            filtering = (f"filtered at confidence {about['min_confidence']:g}" if about["filtered"]
                         else "unfiltered (every pair)")
            print(f"{KIND}: {about['train_pairs']} training pairs of {about['pairs']} ({filtering}), "
                  f"{about['holdout_kept']} held out; edits {', '.join(store.edit_names)}")
            print(f"{KIND}: precision {trainer.precision} ({trainer.precision_reason}); {source.steps_per_epoch} "
                  f"steps/epoch, {trainer.total_steps} steps, {dist.world_size} process(es) on {dist.device}")
        train_to_the_end(trainer, state is not None, run_dir, KIND)
        return 0
    finally:
        teardown_distributed()
