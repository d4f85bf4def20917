"""DRBD moves for `balance`: the five ways hbal moves a VM whose disk is mirrored on two hosts.

A mirrored VM (Ganeti's drbd template) runs on its primary and keeps a synchronous copy of
its disk on its secondary. hbal moves it by combining two operations, failover (live
migration to the secondary, which swaps the roles) and replace-disks (a new copy on a third
host X):

    failover              f          (p, s) -> (s, p)
    replace-secondary     r:X        (p, s) -> (p, X)
    replace-primary       f r:X f    (p, s) -> (X, s)
    replace-and-failover  r:X f      (p, s) -> (X, p)
    failover-and-replace  f r:X      (p, s) -> (s, X)

Each moves the VM's running load from one host to another or not at all, and one disk copy
from one host to another or not at all, so every σ term changes on two hosts at most and
the balancer's closed-form update applies, for all (VM, X) pairs at once. On top come the
terms DRBD makes non-zero: a host must keep free the memory that the worst failed primary
would start on it (r_mem, from the VMs it mirrors), hbal counts the VMs of hosts that cannot
(N+1) and the spread of r_mem, and it refuses a move that makes a host newly fail N+1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .filters import EPSILON
from .score import TAGS_WEIGHT, WEIGHTS, Peers, mirror_memory

_W = dict(WEIGHTS)
#: rows × targets per block, to bound memory
BLOCK_PAIRS = 500_000
#: score changes closer than this are ties, decided in hbal's order
TIE = 1e-12


@dataclass(frozen=True)
class MirrorMove:
    """One hbal move: the new primary and secondary, as roles of the VM's primary "p",
    secondary "s" and a third host "t". hbal skips its soft checks (N+1, spindles) when the
    host the VM leaves is offline: `primary_forced_by` and `secondary_forced_by` name the
    host whose being offline forces the placing of the new primary and secondary."""

    name: str
    hbal: str
    primary: str
    secondary: str
    primary_forced_by: str | None
    secondary_forced_by: str | None

    @property
    def running_from_to(self) -> tuple[str, str] | None:
        """Where the running VM goes (primary-only terms), if it moves."""
        return None if self.primary == "p" else ("p", self.primary)

    @property
    def copy_from_to(self) -> tuple[str, str] | None:
        """Which host gives up a disk copy to which (terms that count both hosts)."""
        return copy_move("p", "s", self.primary, self.secondary)

    @property
    def through_secondary(self) -> bool:
        """Whether the VM runs on its secondary at some point (a failover comes first)."""
        return self.hbal.startswith("f")

    def describe(self, target: str | None) -> str:
        """The Ganeti operations, as an operator would run them."""
        steps = {"f": "failover", "r:X": f"replace-disks -n {target}"}
        return ", then ".join(steps[step] for step in self.hbal.split())


FAILOVER = MirrorMove("failover", "f", "s", "p", "p", None)
#: in the order hbal tries them on each target, which decides ties
TARGETED = (
    MirrorMove("replace-secondary", "r:X", "p", "t", None, "s"),
    MirrorMove("replace-and-failover", "r:X f", "t", "p", None, "s"),
    MirrorMove("replace-primary", "f r:X f", "t", "s", "p", "p"),
    MirrorMove("failover-and-replace", "f r:X", "s", "t", "p", "p"),
)


def lowest_score(state) -> float:
    """hbal's floor, where it stops: the reserved-memory total a cluster must keep however its
    DRBD mirrors are spread (each host reserving the share of them one lost host would
    start), 0 without mirrors."""
    memory = state.capacity[:, 1]
    total, rest = float(memory.sum()), float(memory.sum() - memory.max(initial=0.0))
    auto = np.fromiter((v.auto_balance for v in state.vms), dtype=bool, count=len(state.vms))
    mirrored = float(state.demand[(state.vm_secondary >= 0) & auto, 1].sum())
    if state.n_hosts < 2 or rest <= 0 or mirrored == 0:
        return 0.0
    return _W["reserved_mem_rtotal"] * (mirrored / rest - mirrored / total)


def copy_move(p, s, new_p, new_s):
    """Which host gives up a disk copy to which when a mirrored VM on (p, s) goes to
    (new_p, new_s), or None for a failover, which keeps both copies."""
    old, new = {p, s}, {new_p, new_s}
    return ((old - new).pop(), (new - old).pop()) if old != new else None


class MirroredMoves:
    """Scores every hbal move of mirrored VMs against the balancer's running state.

    `work` is the balancer: it owns the per-host arrays (free resources, σ terms, N+1 state,
    anti-affinity counts) and books every move in them (`_Balancer.apply`); this class keeps
    what only mirrors have, spindles per host and the peer memory behind r_mem.
    """

    def __init__(self, work):
        self.w = work
        state = work.state
        vms = state.vms
        self.secondary_mem = mirror_memory(state)
        self.spindle_use = np.fromiter((v.spindle_use for v in vms), float, len(vms))
        self.spindle_capacity = np.array([h.spindle_capacity for h in state.hosts], dtype=float)
        self.spindles = np.zeros(state.n_hosts)
        for hosts in (work.vm_host, work.vm_secondary):
            placed = hosts >= 0
            self.spindles += np.bincount(hosts[placed], weights=self.spindle_use[placed],
                                         minlength=state.n_hosts)
        memory = state.capacity[:, 1]
        self.inverse_memory = np.divide(1.0, memory, out=np.zeros_like(memory), where=memory > 0)
        self.rebuild_peers()

    def rebuild_peers(self) -> None:
        w = self.w
        self.peers = Peers(w.state.n_hosts, w.vm_host, w.vm_secondary, self.secondary_mem)
        w.r_mem = self.peers.r_mem.copy()
        self.share = w.r_mem * self.inverse_memory

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, rows: np.ndarray, dsts: np.ndarray):
        """Best (change of score + cost, vm, new primary, new secondary, move) over every
        move of `rows` to targets `dsts`, or None if none fits. Ties go to the first in
        hbal's order (VM, failover before targets, target, move), so that on the same file
        both make the same moves."""
        best = None
        block = max(1, BLOCK_PAIRS // (1 + len(TARGETED) * dsts.size))
        for start in range(0, rows.size, block):
            part = rows[start:start + block]
            tried = [(FAILOVER, *self._evaluate(FAILOVER, part, None))]
            if dsts.size:
                tried += [(move, *self._evaluate(move, part, dsts)) for move in TARGETED]
            # columns in hbal's order: failover, then per target each targeted move
            values = np.hstack([tried[0][1]] + ([np.stack([t[1] for t in tried[1:]], axis=2)
                                                 .reshape(part.size, -1)] if dsts.size else []))
            least = float(values.min())
            if not np.isfinite(least) or (best is not None and least >= best[0] - TIE):
                continue
            i, j = divmod(int(np.flatnonzero(values.ravel() <= least + TIE)[0]), values.shape[1])
            which, j = (0, 0) if j == 0 else (1 + (j - 1) % len(TARGETED), (j - 1) // len(TARGETED))
            move, _, new_p, new_s = tried[which]
            best = (least, int(part[i]), int(new_p[i, j]), int(new_s[i, j]), move)
        return best

    def _evaluate(self, move: MirrorMove, rows: np.ndarray, targets: np.ndarray | None):
        """(score change + cost, new primary, new secondary) per row and target; inf where
        the move does not fit."""
        role = {"p": self.w.vm_host[rows][:, None], "s": self.w.vm_secondary[rows][:, None]}
        if targets is not None:
            role["t"] = targets[None, :]
        shape = (rows.size, 1 if targets is None else targets.size)
        mem = self.secondary_mem[rows][:, None]
        # r_mem: the pair (s, p) ends on s; the pair (new s, new p) begins
        r_removed = self.peers.without(role["s"], role["p"], mem)
        r_new = np.maximum(r_removed if move.secondary == "s" else self.w.r_mem[role[move.secondary]],
                           self.peers.lookup(role[move.secondary], role[move.primary]) + mem)
        total = self._change(move, rows, role, shape, r_removed, r_new)
        feasible = self._fits(move, rows, role, shape, r_removed, r_new, total)
        total += self.w.cost[rows][:, None]
        return (np.where(feasible, total, np.inf), np.broadcast_to(role[move.primary], shape),
                np.broadcast_to(role[move.secondary], shape))

    def _change(self, move, rows, role, shape, r_removed, r_new) -> np.ndarray:
        """The change of hbal's score: σ terms, r_mem spread, N+1 and offline counts."""
        w = self.w
        online = w.online
        running, copy = move.running_from_to, move.copy_from_to
        total = np.zeros(shape)
        for (weight, x, a, c), mirrored in zip(w.terms, w.term_mirrored):
            pair = copy if mirrored else running
            if pair is not None:
                total += weight * _sigma_change(x, online, w.n_online, a[rows][:, None],
                                                c, role[pair[0]], role[pair[1]])
        r_after = {"s": r_removed, move.secondary: r_new}
        total += self._reserved_change(r_after, role)
        run = w.running_mem[rows][:, None]
        for name, h in role.items():    # hbal re-judges N+1 on every host a move touches
            moved = running is not None and name in running
            unallocated = w.unallocated[h] + (run if moved and name == "p" else 0.0) \
                - (run if moved and name == move.primary else 0.0)
            count = (copy is not None and name == copy[1]) - (copy is not None and name == copy[0])
            primaries = (moved and name == move.primary) - (moved and name == "p")
            before = np.where(w.n1_fail[h], w.instances[h], 0.0)
            after = np.where(unallocated <= r_after.get(name, w.r_mem[h]), w.instances[h] + count, 0.0)
            total += np.where(online[h], _W["n1_cnt"] * (after - before),
                              _W["offline_all_cnt"] * count + _W["offline_pri_cnt"] * primaries)
        return total

    def _fits(self, move, rows, role, shape, r_removed, r_new, total) -> np.ndarray:
        """hbal's checks for each host the VM runs on or copies to, in the order hbal's
        operations reach them; `total` takes the anti-affinity change on the way."""
        w = self.w
        online = w.online
        p, s = role["p"], role["s"]
        feasible = np.ones(shape, dtype=bool)
        if "t" in role:
            feasible &= (role["t"] != p) & (role["t"] != s)
        strict_p = online[role[move.primary_forced_by]] if move.primary_forced_by else np.True_
        strict_s = online[role[move.secondary_forced_by]] if move.secondary_forced_by else np.True_
        demand = w.demand[rows][:, None, :]
        run = w.running_mem[rows][:, None]
        if move.running_from_to is not None:
            new_p = role[move.primary]
            gaining = [new_p] + ([s] if move.primary != "s" and move.through_secondary else [])
            for h in gaining:
                r = r_removed if h is s else w.r_mem[h]
                fail_before = (w.unallocated[h] <= r) if h is s else w.n1_fail[h]
                feasible &= w.accepts[h] & (w.vm_count[h] < w.max_vms[h])
                feasible &= demand[..., 1] < w.free[h, 1] - EPSILON
                feasible &= demand[..., 0] <= w.free[h, 0] + EPSILON
                feasible &= ~strict_p | fail_before | (w.unallocated[h] - run > r)
            if w.groups:
                self._tags(total, feasible, rows, p, new_p)
                if len(gaining) > 1:    # passing through the secondary must not clash either
                    self._tags(np.zeros(shape), feasible, rows, p, s)
        copy = move.copy_from_to
        if copy is not None:
            h = role[copy[1]]
            feasible &= demand[..., 2] <= w.free[h, 2] + EPSILON
            strict = strict_p if copy[1] == move.primary else strict_s
            feasible &= ~strict | (self.spindles[h] + self.spindle_use[rows][:, None]
                                   <= self.spindle_capacity[h] + EPSILON)
        # the new secondary must hold the memory it may have to start, not newly failing N+1
        new_s = role[move.secondary]
        free_then = w.unallocated[new_s] + (run if move.secondary == "p" else 0.0)
        fail_then = {"p": free_then <= w.r_mem[p], "s": w.unallocated[s] <= r_removed}.get(
            move.secondary, w.n1_fail[new_s])
        mem = self.secondary_mem[rows][:, None]
        feasible &= ~strict_s | ((mem < free_then) & (fail_then | (free_then > r_new)))
        return feasible

    def _reserved_change(self, new_r: dict, role: dict) -> np.ndarray:
        """Change of reserved_mem_cv and reserved_mem_rtotal when r_mem of the named hosts
        (two distinct hosts at most) takes the given values."""
        w = self.w
        online = w.online
        share = self.share
        on = share[online]
        n = w.n_online
        s1, s2 = float(on.sum()), float(on @ on)
        d1 = d2 = 0.0
        for name, r in new_r.items():
            h = role[name]
            d = np.where(online[h], r * self.inverse_memory[h] - share[h], 0.0)
            d1 = d1 + d
            d2 = d2 + (share[h] + d) ** 2 - share[h] ** 2
        sigma = np.sqrt(np.maximum((s2 + d2) / n - ((s1 + d1) / n) ** 2, 0.0))
        return _W["reserved_mem_cv"] * (sigma - float(np.std(on))) + _W["reserved_mem_rtotal"] * d1

    def _tags(self, total, feasible, rows, src, dst):
        w = self.w
        member = w.member[rows]
        if not member.any():
            return
        crowded = (w.group_count[:, src[:, 0]].T >= 2) & member
        total -= TAGS_WEIGHT * np.where(w.online[src[:, 0]], crowded.sum(1), 0)[:, None]
        for g in np.flatnonzero(member.any(axis=0)):
            clash = member[:, g][:, None] & (w.group_count[g][dst] >= 1)
            if w.group_hard[g]:
                feasible &= ~clash
            else:
                total += TAGS_WEIGHT * clash

    # ------------------------------------------------------------------ applying
    def moved(self, v: int, copy: tuple[int, int] | None) -> None:
        """What the balancer's booking of a move of `v` leaves to this class: spindles follow
        the disk copy, and the peers (so r_mem) follow the new pair."""
        if copy is not None:
            self.spindles[copy[0]] -= self.spindle_use[v]
            self.spindles[copy[1]] += self.spindle_use[v]
        self.rebuild_peers()

def _sigma_change(x, online, n, amount, divisor, src, dst):
    """Change of σ(x over online hosts) when `amount` leaves host `src` for host `dst`
    (index arrays that broadcast; src and dst differ everywhere)."""
    on = x[online]
    s1, s2 = float(on.sum()), float(on @ on)
    out = np.where(online[src], amount / divisor[src], 0.0)
    into = np.where(online[dst], amount / divisor[dst], 0.0)
    xs, xd = x[src], x[dst]
    n1 = s1 - out + into
    n2 = s2 + (xs - out) ** 2 - xs ** 2 + (xd + into) ** 2 - xd ** 2
    return np.sqrt(np.maximum(n2 / n - (n1 / n) ** 2, 0.0)) - float(np.std(on))
