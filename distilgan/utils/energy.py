"""What a piece of work costs the machine: process CPU seconds (this process and its finished
children, e.g. DataLoader workers) and, where Linux exposes Intel RAPL counters
(``/sys/class/powercap/intel-rapl*``), package energy in joules. On machines without readable RAPL
(most VMs, AMD without the powercap driver) energy is reported as "not readable", never guessed."""

from __future__ import annotations

import resource
import time
from pathlib import Path

RAPL_ROOT = Path("/sys/class/powercap")


def _rapl_domains() -> list[Path]:
    """Top-level package domains (intel-rapl:N), not their sub-zones (intel-rapl:N:M, which they include)."""
    if not RAPL_ROOT.is_dir():
        return []
    return sorted(p for p in RAPL_ROOT.glob("intel-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").exists())


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CostMeter:
    """``meter = CostMeter(); ...; cost = meter.per_item(n)`` -> CPU-seconds and joules per item."""

    def __init__(self) -> None:
        self.domains = _rapl_domains()
        self.reset()

    def reset(self) -> None:
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        self.energy = [_read_int(d / "energy_uj") for d in self.domains]

    def _joules(self) -> float | None:
        if not self.domains or any(e is None for e in self.energy):
            return None
        total = 0.0
        for domain, start in zip(self.domains, self.energy):
            now = _read_int(domain / "energy_uj")
            if now is None:
                return None
            if now < start:  # the counter wrapped around
                now += _read_int(domain / "max_energy_range_uj") or 0
            total += (now - start) / 1e6
        return total

    @property
    def energy_readable(self) -> bool:
        return bool(self.domains) and all(e is not None for e in self.energy)

    def per_item(self, items: int) -> dict[str, float | str | None]:
        """Since the last reset: wall seconds, CPU seconds and joules per item ("not readable" without RAPL)."""
        items = max(1, int(items))
        joules = self._joules()
        return {"wall_s_per_item": (time.perf_counter() - self.wall) / items,
                "cpu_s_per_item": (cpu_seconds() - self.cpu) / items,
                "joules_per_item": joules / items if joules is not None else "not readable"}
