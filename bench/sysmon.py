"""How busy the machine is apart from the benchmark: the figures are only as good as the quiet they ran in.

On a small shared machine (2 cores) another process running tests halves what obsmcp gets. Before each
phase the runner waits (up to a limit) for the rest of the machine to go quiet, and every phase records how
many cores other processes used while it ran (``other_cores``): system busy time from /proc/stat minus the
CPU time of the processes the benchmark owns.
"""

from __future__ import annotations

import os
import time
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def system_busy_s() -> float:
    """CPU seconds spent busy by all cores since boot."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and all its live descendants (e.g. obsmcp's decode worker processes)."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree = {pid}
    changed = True
    while changed:
        changed = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                changed = True
    total = 0.0
    for p in tree:
        try:
            total += proc_cpu_s(p)
        except OSError:
            continue
    return total


def own_cpu_s() -> float:
    """This process (all threads) and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuWatch:
    """Measures, over a phase, the cores used by other processes than ours (`pids` and their descendants,
    and this process)."""

    def __init__(self, pids: tuple[int, ...] = ()) -> None:
        self.pids = pids

    def __enter__(self) -> CpuWatch:
        self.t0 = time.perf_counter()
        self.sys0 = system_busy_s()
        self.own0 = own_cpu_s() + sum(tree_cpu_s(p) for p in self.pids)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        sys_busy = system_busy_s() - self.sys0
        own = own_cpu_s() + sum(tree_cpu_s(p) for p in self.pids) - self.own0
        self.result = {
            "wall_s": round(wall, 2),
            "bench_cores": round(own / wall, 2) if wall else None,
            "other_cores": round(max(0.0, sys_busy - own) / wall, 2) if wall else None,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        return self.result


def wait_for_quiet(
    max_wait_s: float = 600.0, threshold_cores: float = 0.25, window_s: float = 3.0, log: Any = print
) -> dict[str, Any]:
    """Wait until other processes use less than `threshold_cores` over `window_s`; give up after max_wait_s."""
    t_start = time.perf_counter()
    told = False
    while True:
        with CpuWatch() as w:
            time.sleep(window_s)
        other = w.stop()["other_cores"]
        waited = time.perf_counter() - t_start
        if other is not None and other < threshold_cores:
            return {"waited_s": round(waited, 1), "other_cores_before": other, "quiet": True}
        if waited >= max_wait_s:
            log(f"  machine still busy after {waited:.0f}s ({other} cores used by other processes): going on")
            return {"waited_s": round(waited, 1), "other_cores_before": other, "quiet": False}
        if not told:
            log(f"  waiting for the machine to go quiet ({other} cores used by other processes)")
            told = True


MAX_WAIT_S = 600.0  # set by the runner (--max-quiet-wait); 0 disables waiting


def settle(log: Any = print) -> dict[str, Any]:
    """wait_for_quiet with the runner's limit."""
    if MAX_WAIT_S <= 0:
        with CpuWatch() as w:
            time.sleep(1.0)
        return {"waited_s": 0.0, "other_cores_before": w.stop()["other_cores"], "quiet": None}
    return wait_for_quiet(MAX_WAIT_S, log=log)
