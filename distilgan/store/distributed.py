"""``distilgan sample`` under torchrun: the shards of one set split over the ranks, same bytes.

Every shard follows from (seed, shard index, teacher), so ranks need no coordination while they
sample: rank 0 prepares the folder (lock, stale temporaries, resume check) and tells every rank which
shards are already done; the shards still to write are dealt out round-robin; each rank writes its
own shard files and, after each one, an entry file (``.entry-NNNNN.json``, the manifest entry plus the
settings) beside it. When all ranks are done, rank 0 writes the manifest once, from every rank's
entries, and deletes the entry files: the folder is then exactly what one process writes. A killed
rank (or a killed run) leaves its finished shards with their entry files, so the same command, with
any number of ranks or none, keeps them (checksum-checked) and writes only the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from distilgan.errors import UserError

# Test hook: "RANK:COUNT" SIGKILLs that rank right after its COUNT-th shard, to prove a killed rank resumes.
KILL_ENV = "DISTILGAN_TEST_KILL_SAMPLE"


def _kill_hook(rank: int) -> int:
    text = os.environ.get(KILL_ENV, "")
    wanted, _, count = text.partition(":")
    return int(count) if text and int(wanted) == rank else 0


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def write_store_ranks(teacher: Any, out_dir: Path, settings: dict[str, Any], class_list: list[int],
                      z_distribution: Any, dist_ctx: Any, progress: bool, overwrite: bool,
                      stats: dict[str, Any] | None) -> dict[str, Any]:
    """Rank ``dist_ctx.rank``'s part of ``write_store`` (every rank calls it, with the same arguments)."""
    import torch.distributed as dist

    from distilgan.store.writer import (_exclusive, _manifest, _prepare_folder, _resume_state, _sample_plan,
                                      _write_manifest, clear_entries, plan_shards)
    from distilgan.store.format import write_entry

    rank, world = dist_ctx.rank, dist_ctx.world_size
    with contextlib.ExitStack() as hold:
        # rank 0 alone touches the folder first; the others learn the outcome (or its error) from it
        found: tuple[str | None, dict[int, dict[str, Any]]] = (None, {})
        if rank == 0:
            try:
                _prepare_folder(out_dir, overwrite)
                hold.enter_context(_exclusive(out_dir))  # held until the manifest is written
                found = (None, _resume_state(out_dir, settings, overwrite))
            except UserError as err:
                found = (str(err), {})
        error, done = _broadcast(found)
        if error:
            raise UserError(error)
        done = {int(k): v for k, v in done.items()}
        todo = [shard for shard in plan_shards(settings["per_class"], class_list, settings["shard_size"])
                if shard[0] not in done]
        mine = todo[rank::world]  # round-robin over what is left: balanced on a resume too
        if stats is not None:
            stats.update(resumed=sum(e["count"] for e in done.values()), written=sum(s[2] for s in todo))

        written: dict[int, dict[str, Any]] = {}
        kill_after = _kill_hook(rank)

        def saved(entry: dict[str, Any]) -> None:
            write_entry(out_dir, settings, entry)
            written[int(entry["index"])] = entry
            if kill_after and len(written) >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

        failure: BaseException | None = None
        if mine:
            from distilgan.utils.progress import progress_bar

            share = sum(s[2] for s in mine)
            try:
                with progress_bar(total=share, unit="img", unit_scale=share >= 10000, disable=not (progress and rank == 0),
                                  desc=f"sampling {out_dir.name} (rank 0 of {world})", dynamic_ncols=True) as bar:
                    _sample_plan(teacher, out_dir, mine, settings, class_list, z_distribution, bar, saved)
            except Exception as err:  # noqa: BLE001 - every rank must reach the gather below, or the rest hang
                failure = err
        # every rank's entries (and failures) to every rank: one collective, also the end-of-work barrier
        reports: list[Any] = [None] * world
        dist.all_gather_object(reports, (None if failure is None else f"rank {rank}: {failure}", written))
        problems = [problem for problem, _ in reports if problem]
        if failure is not None:
            raise failure
        if problems:
            raise UserError(f"{problems[0]} (the shards finished so far are kept; rerun the same command to resume)")
        for _, entries in reports:
            done.update({int(k): v for k, v in entries.items()})
        manifest = _manifest(settings, done)
        if rank == 0:
            _write_manifest(out_dir, manifest)  # the one manifest, byte-identical to a single process's
            clear_entries(out_dir)
    dist.barrier()  # nobody returns before the manifest is in place
    return manifest
