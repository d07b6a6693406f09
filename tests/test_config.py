"""The run configuration: sections per kind, options generated from the fields, EMA as a half-life."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from distilgan.errors import UserError
from distilgan.train.config import (KINDS, LoopConfig, add_config_options, check_resume_compatible, cli_values,
                                    config_to_dict, ema_beta, key_fields, kind_defaults, load_yaml,
                                    resolve_run_config)


def parser_for(kind: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=kind, exit_on_error=False)
    add_config_options(parser, kind)
    return parser


@pytest.mark.parametrize("kind", ["distill", "train-teacher"])
def test_every_key_is_an_option_with_its_kinds_default(kind: str) -> None:
    parser = parser_for(kind)
    dests = {action.dest: action for action in parser._actions}
    assert set(key_fields(kind)) <= set(dests)
    defaults = kind_defaults(kind)
    # the help states this kind's default: 64 for the teacher's batch, 128 for distill's
    assert f"(default {defaults['batch_size']})" in dests["batch_size"].help
    args = parser.parse_args([])
    assert all(value is None for value in cli_values(args, kind).values())  # "not given" is visible


def test_a_teacher_run_records_only_its_own_keys() -> None:
    teacher = config_to_dict(resolve_run_config("train-teacher", {"ch": 96}))
    assert set(teacher) == {"kind", "data", "loop", "model", "objective", "extra"}
    assert teacher["model"]["ch"] == 96 and "d_steps" in teacher["objective"]
    flat_keys = {key for section in ("data", "loop", "model", "objective") for key in teacher[section]}
    assert not flat_keys & {"lambda_pixel", "gstep", "pixel_schedule", "real"}
    # the student-network widths belong to --arch distylegan (the from-scratch baseline): unset for biggan
    assert teacher["model"]["arch"] == "biggan" and teacher["model"]["ngf"] is None
    student = config_to_dict(resolve_run_config("distill", {}))
    assert "lambda_pixel" in student["objective"] and "ch" not in student["model"]


def test_options_are_parsed_checked_and_sectioned() -> None:
    parser = parser_for("distill")
    args = parser.parse_args(["--lr-g", "1e-3", "--no-ema", "--metrics", "kid", "fid", "--gstep", "5"])
    config = resolve_run_config("distill", cli_values(args, "distill"))
    assert (config.loop.lr_g, config.loop.ema, config.loop.metrics, config.objective.gstep) == (1e-3, False, "kid,fid", 5)
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--gstep", "0"])  # checked by the field's own rule
    with pytest.raises(UserError, match="lecam"):
        resolve_run_config("distill", {"lecam": 0.3})  # a teacher key is not a distill key


def test_yaml_flat_or_by_section(tmp_path: Path) -> None:
    flat, nested = tmp_path / "flat.yaml", tmp_path / "nested.yaml"
    flat.write_text("d-steps: 2\nbatch_size: 32\nch: 48\n")
    nested.write_text("loop:\n  batch_size: 32\nmodel:\n  ch: 48\nobjective:\n  d_steps: 2\n")
    a = resolve_run_config("train-teacher", {}, load_yaml(flat, "train-teacher"))
    b = resolve_run_config("train-teacher", {}, load_yaml(nested, "train-teacher"))
    assert config_to_dict(a) == config_to_dict(b)
    assert (a.loop.batch_size, a.model.ch, a.objective.d_steps) == (32, 48, 2)


def test_resume_refuses_a_changed_recipe_but_not_a_changed_cadence() -> None:
    saved = config_to_dict(resolve_run_config("train-teacher", {"ch": 96}))
    check_resume_compatible(saved, resolve_run_config("train-teacher", {"ch": 96, "log_every": 50, "compile": True}))
    with pytest.raises(UserError, match="'ch' is 128 but the run was started with 96"):
        check_resume_compatible(saved, resolve_run_config("train-teacher", {"ch": 128}))
    with pytest.raises(UserError, match="holds a train-teacher run, not a distill run"):
        resolve_run_config("distill", {}, saved=saved)


def test_ema_half_life_does_not_change_with_the_batch() -> None:
    small, large = LoopConfig(batch_size=64, ema_kimg=10.0), LoopConfig(batch_size=128, ema_kimg=10.0)
    # two updates at batch 64 average as much as one at batch 128: the same images
    assert ema_beta(small, 64, 10**6) ** 2 == pytest.approx(ema_beta(large, 128, 10**6), rel=1e-12)
    assert ema_beta(large, 128, 10**6) == pytest.approx(0.5 ** (128 / 10_000))
    # StyleGAN's ramp-up: early on the half-life is at most rampup * images seen
    ramped = LoopConfig(batch_size=64, ema_kimg=10.0, ema_rampup=0.05)
    assert ema_beta(ramped, 64, 64_000) == pytest.approx(0.5 ** (64 / 3_200))
    assert ema_beta(ramped, 64, 10**7) == pytest.approx(ema_beta(small, 64, 10**7))
    # a fixed decay (older runs, or given) wins: no per-update value
    assert ema_beta(LoopConfig(ema_decay=0.999), 128, 10**6) is None
    # the defaults keep what decay 0.999 per update did at each kind's default batch
    for kind in ("distill", "train-teacher"):
        loop = resolve_run_config(kind, {}).loop
        assert ema_beta(loop, loop.batch_size, 10**7) == pytest.approx(0.999, abs=2e-6)


def test_kinds_share_the_loop_and_differ_in_defaults() -> None:
    assert KINDS["train-teacher"].defaults["beta1"] == 0.0
    assert resolve_run_config("distill", {}).loop.beta1 == 0.5
    assert resolve_run_config("train-teacher", {}).loop.ema_start == 4000
