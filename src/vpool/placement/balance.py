"""`balance`: DRS-style balancing — the Plan of single-VM moves that lowers hbal's score most.

It is hbal's search (steepest descent, one move per step, every movable VM against every
host) made cheap: the score is a weighted sum of population standard deviations, and moving
VM v from s to d only changes x_s and x_d in each term, so from Σx and Σx² the new σ of every
(VM, destination) pair is a few array operations on a (VMs × hosts) matrix, not a rescoring
of the cluster per candidate. On large clusters each step first looks only at VMs on the
most loaded hosts and at the least loaded destinations; a full search confirms that nothing
better remains before the balancer stops.

VMs whose disk is mirrored on a second host (Ganeti's DRBD) move the five ways hbal moves
them, failovers and disk replacements (`mirrored`), judged in the same step against the
same running state.

Every move is checked against the state left by the moves before it, so every intermediate
state fits (and, as in hbal, keeps some memory free on its destination); the plan's stages
group moves on disjoint hosts that may run together.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .filters import EPSILON
from .mirrored import TIE, MirroredMoves, copy_move, lowest_score
from .plan import Move, Plan, staged
from .score import (OFFLINE_WEIGHT, TAGS_WEIGHT, hbal_score, instance_counts, n1_state,
                    sigma_terms)
from .state import ClusterState

#: below this many (VM, host) pairs every step searches them all
FULL_SEARCH_PAIRS = 400_000
#: rows per block in a full search, to bound memory
BLOCK_PAIRS = 2_000_000
MIN_IMPROVEMENT = 1e-9
#: what a σ term measures, in the words of a move's reason
_LABELS = {"free_mem_cv": "memory", "free_mem_cv_forth": "memory", "vcpu_ratio_cv": "vCPU ratio",
           "free_disk_cv": "disk", "spindles_cv": "disk spindles", "cpu_load_cv": "CPU load",
           "mem_load_cv": "VM count", "disk_load_cv": "VM count", "net_load_cv": "VM count"}


def _label(names: tuple[str, ...]) -> str:
    """Load terms that every VM weighs 1 in count VMs, whatever the first name says."""
    return "VM count" if "mem_load_cv" in names else _LABELS.get(names[0], "balance")


@dataclass(frozen=True)
class BalancePolicy:
    """How far balancing may go.

    `min_gain` and `min_gain_limit` are hbal's `-g` and `--min-gain-limit`: once the score is
    at or below the limit, a move must gain at least `min_gain`. `migration_cost` is the
    score a move must gain per GiB of memory it copies, so small gains never justify big
    migrations. `dynamic_load=False` is hbal's `--ignore-dynu`; `measured_cpu` balances the
    VMs' measured CPU load instead of vCPUs and VM counts (score.sigma_terms). `candidates` is how many
    hosts each side of a step looks at first on clusters too large to search fully.
    """

    max_moves: int | None = None
    min_gain: float = 0.01
    min_gain_limit: float = 0.1
    migration_cost: float = 0.0
    dynamic_load: bool = True
    measured_cpu: bool = False
    candidates: int = 48


class _Balancer:
    def __init__(self, state: ClusterState, policy: BalancePolicy):
        self.state = state
        self.policy = policy
        vms = state.vms
        self.vm_host = state.vm_host.copy()
        self.vm_secondary = state.vm_secondary.copy()
        self.online = state.up.copy()
        self.n_online = int(self.online.sum())
        self.accepts = state.accepts_vms
        self.destinations = np.flatnonzero(self.accepts)
        self.free = state.free.copy()
        self.vm_count = state.vm_count.astype(float)
        self.max_vms = state.max_vms
        self.demand = state.demand
        self.storage, self.vm_storage = state.storage, state.vm_storage
        pinned = state.groups_with("affinity")
        free_to_move = np.fromiter((v.auto_balance and not (v.groups & pinned) for v in vms),
                                   dtype=bool, count=len(vms)) & (self.vm_host >= 0)
        migratable = np.fromiter((v.migratable for v in vms), dtype=bool, count=len(vms))
        self.movable = free_to_move & migratable & (self.vm_secondary < 0)
        self.mirrored_movable = free_to_move & (self.vm_secondary >= 0)
        moving = np.flatnonzero(self.movable | self.mirrored_movable)
        # terms no movable VM changes stay constant: they drop out of every comparison
        active = [t for t in sigma_terms(state, policy.dynamic_load, policy.measured_cpu) if np.any(t.a[moving] != 0)]
        self.terms = [[t.weight, t.x.copy(), t.a, t.c] for t in active]
        self.term_mirrored = [t.mirrored for t in active]
        self.labels = [_label(t.names) for t in active]
        self.running_mem = state.demand[:, 1] * np.fromiter((v.running for v in vms), bool,
                                                              len(vms))
        self.r_mem, self.unallocated, reported = n1_state(state)
        self.n1_fail = reported < self.r_mem
        self.instances = instance_counts(state)[1].astype(float)
        hard = state.groups_with("anti-affinity")
        soft = state.groups_with("soft-anti-affinity")
        self.groups = sorted(hard | soft)
        index = {g: i for i, g in enumerate(self.groups)}
        self.group_hard = np.array([g in hard for g in self.groups], dtype=bool)
        self.member = np.zeros((len(vms), len(self.groups)), dtype=bool) if self.groups else None
        if self.groups:
            for i, vm in enumerate(vms):
                for g in vm.groups:
                    if g in index:
                        self.member[i, index[g]] = True
            self.group_count = np.stack([state.group_members(g) for g in self.groups])
        self.cost = policy.migration_cost * state.demand[:, 1] / 1024.0
        self.wide = policy.candidates
        self.kind = self._kinds()
        self.mirrors = MirroredMoves(self) if self.mirrored_movable.any() else None

    def _kinds(self) -> np.ndarray:
        """A number per VM, equal for VMs that any move affects identically (same demand,
        same amounts in every term, same storage, no exclusion group): from one host, only the
        first VM of each kind needs evaluating."""
        if self.demand.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        columns = [self.demand, self.running_mem[:, None], self.cost[:, None], self.vm_storage[:, None]]
        columns += [a[:, None] for _, _, a, _ in self.terms]
        _, kind = np.unique(np.hstack(columns), axis=0, return_inverse=True)
        kind = kind.ravel()
        if self.groups:
            grouped = np.flatnonzero(self.member.any(axis=1))
            kind[grouped] = kind.max() + 1 + np.arange(grouped.size)
        return kind

    @property
    def n1_matters(self) -> bool:
        """Whether any move can change the N+1 count: never on clusters without DRBD
        mirrors whose hosts all have memory left, since moves keep memory free."""
        return bool(self.r_mem.any() or self.n1_fail.any() or (self.unallocated <= 0).any())

    # ------------------------------------------------------------------ evaluation
    def _sigma_now(self):
        online = self.online
        return sum(w * float(np.std(x[online])) for w, x, _, _ in self.terms)

    def evaluate(self, rows: np.ndarray, dsts: np.ndarray):
        """Best (change of score + cost, vm, host) over rows × dsts, or None if none fits."""
        if rows.size == 0 or dsts.size == 0:
            return None
        key = self.vm_host[rows] * (int(self.kind.max()) + 1) + self.kind[rows]
        rows = rows[np.sort(np.unique(key, return_index=True)[1])]
        best = None
        block = max(1, BLOCK_PAIRS // dsts.size)
        for start in range(0, rows.size, block):
            found = self._evaluate_block(rows[start:start + block], dsts)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        return best

    def _evaluate_block(self, rows, dsts):
        src = self.vm_host[rows]
        src_online = self.online[src]
        n = self.n_online
        total = np.zeros((rows.size, dsts.size))
        q, spare, scratch = (np.empty_like(total) for _ in range(3))
        for weight, x, a, c in self.terms:
            on = x[self.online]
            s1, s2 = float(on.sum()), float(np.dot(on, on))
            av = a[rows]
            out = np.where(src_online, av / c[src], 0.0)
            xs = x[src]
            row1 = s1 - out
            row2 = s2 + (xs - out) ** 2 - xs ** 2
            np.multiply(av[:, None], 1.0 / c[dsts][None, :], out=q)
            # new Σx = row1 + q and new Σx² = row2 + q·(2·x_d + q); var = Σx²/n − (Σx/n)²
            np.add(q, row1[:, None], out=spare)
            np.multiply(spare, spare, out=spare)
            np.add(q, 2.0 * x[dsts][None, :], out=scratch)
            np.multiply(scratch, q, out=scratch)
            np.add(scratch, row2[:, None], out=scratch)
            scratch *= 1.0 / n
            spare *= 1.0 / (n * n)
            np.subtract(scratch, spare, out=scratch)
            np.maximum(scratch, 0.0, out=scratch)
            np.sqrt(scratch, out=scratch)
            scratch *= weight
            total += scratch
        total -= self._sigma_now()
        if self.n1_matters:
            total += self._n1_change(rows, src, src_online, dsts)
        total -= np.where(src_online, 0.0, OFFLINE_WEIGHT)[:, None]
        demand, free = self.demand[rows], self.free[dsts]
        feasible = np.less_equal.outer(demand[:, 0], free[:, 0] + EPSILON)
        # as hbal: a move never leaves its destination without free memory
        feasible &= np.less.outer(demand[:, 1], free[:, 1] - EPSILON)
        feasible &= np.less_equal.outer(demand[:, 2], free[:, 2] + EPSILON)
        feasible &= src[:, None] != dsts[None, :]
        feasible &= self.vm_storage[rows][:, None] == self.storage[dsts][None, :]
        feasible &= (self.vm_count[dsts] < self.max_vms[dsts])[None, :]
        if self.groups:
            self._add_tag_change(total, feasible, rows, src, src_online, dsts)
        total += self.cost[rows][:, None]
        total[~feasible] = np.inf
        flat = int(np.argmin(total))
        value = float(total.flat[flat])
        if not np.isfinite(value):
            return None
        i, j = divmod(flat, dsts.size)
        return value, int(rows[i]), int(dsts[j])

    def _n1_change(self, rows, src, src_online, dsts):
        mem = self.running_mem[rows]
        before_s = np.where(self.n1_fail[src], self.instances[src], 0.0)
        after_s = np.where(self.unallocated[src] + mem <= self.r_mem[src],
                           self.instances[src] - 1, 0.0)
        row = np.where(src_online, after_s - before_s, 0.0)
        before_d = np.where(self.n1_fail[dsts], self.instances[dsts], 0.0)
        fail_d = (self.unallocated[dsts][None, :] - mem[:, None]) <= self.r_mem[dsts][None, :]
        after_d = np.where(fail_d, self.instances[dsts][None, :] + 1, 0.0)
        return row[:, None] + after_d - before_d[None, :]

    def _add_tag_change(self, total, feasible, rows, src, src_online, dsts):
        member = self.member[rows]
        if not member.any():
            return
        crowded_src = self.group_count[:, src].T >= 2
        total -= TAGS_WEIGHT * np.where(src_online, (member & crowded_src).sum(1), 0)[:, None]
        present = (self.group_count[:, dsts] >= 1).astype(float)
        hard = member & self.group_hard
        soft = member & ~self.group_hard
        feasible &= (hard.astype(float) @ present) == 0
        total += TAGS_WEIGHT * (soft.astype(float) @ present)

    # ------------------------------------------------------------------ search
    def candidate_hosts(self):
        """The most loaded hosts (with the offline ones) and the least loaded destinations,
        by the first-order change each term's σ would see from a typical VM."""
        moving = np.flatnonzero(self.movable | self.mirrored_movable)
        pressure = np.zeros(self.state.n_hosts)
        for weight, x, a, c in self.terms:
            sigma = float(np.std(x[self.online]))
            if sigma > 0:
                mean = float(x[self.online].mean())
                pressure += weight * float(a[moving].mean()) * (x - mean) / (sigma * c)
        k = self.wide
        hot = np.flatnonzero(self.online)[np.argsort(-pressure[self.online], kind="stable")[:k]]
        offline = np.flatnonzero(~self.online)
        sources = np.concatenate([hot, offline])
        dsts = self.destinations[np.argsort(pressure[self.destinations], kind="stable")[:k]]
        return sources, dsts

    def best_move(self, score_now: float):
        """(gain, vm, new host, new mirror host or None, MirrorMove or None), or None."""
        shared, mirrored = np.flatnonzero(self.movable), np.flatnonzero(self.mirrored_movable)
        everything = (shared, mirrored, self.destinations)
        if (shared.size + mirrored.size) * self.destinations.size <= FULL_SEARCH_PAIRS:
            return self._acceptable(self._search(*everything), score_now)
        sources, dsts = self.candidate_hosts()
        near = (shared[np.isin(self.vm_host[shared], sources)],
                mirrored[np.isin(self.vm_host[mirrored], sources)
                         | np.isin(self.vm_secondary[mirrored], sources)], dsts)
        found = self._acceptable(self._search(*near), score_now)
        if found is None:
            found = self._acceptable(self._search(*everything), score_now)
            if found is not None:
                self.wide *= 2
        return found

    def _search(self, shared, mirrored, dsts):
        found = self.evaluate(shared, dsts)
        found = found and (*found, None, None)
        if self.mirrors is not None:
            other = self.mirrors.evaluate(mirrored, dsts)
            if other is not None and (found is None or other[0] < found[0] - TIE
                                      or (other[0] <= found[0] + TIE and other[1] < found[1])):
                found = other   # a tie goes to the first VM, as in hbal
        return found

    def _acceptable(self, found, score_now):
        if found is None:
            return None
        value, v = found[:2]
        gain = -(value - self.cost[v])
        if value >= -MIN_IMPROVEMENT:
            return None
        if score_now <= self.policy.min_gain_limit and gain < self.policy.min_gain:
            return None
        return (gain, *found[1:])

    def main_effect(self, v: int, running: tuple | None, copy: tuple | None, gain: float) -> str:
        """What a move improves most, in words, for its reason. `running` is where the VM's
        running load goes and `copy` where its disk goes, as (from host, to host) or None."""
        online = self.online
        effects = {}
        for (weight, x, a, c), mirrored, label in zip(self.terms, self.term_mirrored, self.labels):
            pair = copy if mirrored else running
            if pair is None:
                continue
            s, d = pair
            after = x.copy()
            if online[s]:
                after[s] -= a[v] / c[s]
            after[d] += a[v] / c[d]
            change = weight * (np.std(x[online]) - np.std(after[online]))
            effects[f"evens out {label}"] = effects.get(f"evens out {label}", 0.0) + change
        s = int(self.vm_host[v])
        if not online[s] and running is not None:
            effects["leaves an offline host"] = OFFLINE_WEIGHT
        elif self.groups and running is not None:
            crowded = self.member[v] & (self.group_count[:, s] >= 2)
            effects["separates anti-affinity members"] = TAGS_WEIGHT * float(crowded.sum())
        if self.vm_secondary[v] >= 0:   # the rest of a DRBD move's gain is N+1 memory
            effects["spreads failover memory (N+1)"] = gain - sum(effects.values())
        return max(effects, key=effects.get) if effects else "evens out the load"

    def apply(self, v: int, d: int, secondary: int | None = None) -> tuple[int, int | None]:
        """Book a move of v to host d (and its mirror to `secondary`, for a mirrored VM);
        returns where it was. A VM without a mirror takes its disk along; a mirrored VM's
        disk copy moves only as the move says (copy_move)."""
        s, ss = int(self.vm_host[v]), (int(self.vm_secondary[v]) if secondary is not None else None)
        running = (s, d) if d != s else None
        copy = running if secondary is None else copy_move(s, ss, d, secondary)
        demand = self.demand[v]
        if running is not None:
            self.free[s, :2] += demand[:2]
            self.free[d, :2] -= demand[:2]
            self.vm_count[s] -= 1
            self.vm_count[d] += 1
            self.unallocated[s] += self.running_mem[v]
            self.unallocated[d] -= self.running_mem[v]
            if self.groups:
                self.group_count[self.member[v], s] -= 1
                self.group_count[self.member[v], d] += 1
        if copy is not None:
            gone, came = copy
            self.free[gone, 2] += demand[2]
            self.free[came, 2] -= demand[2]
            self.instances[gone] -= 1
            self.instances[came] += 1
        for (_, x, a, c), mirrored in zip(self.terms, self.term_mirrored):
            pair = copy if mirrored else running
            if pair is not None:
                if self.online[pair[0]]:
                    x[pair[0]] -= a[v] / c[pair[0]]
                x[pair[1]] += a[v] / c[pair[1]]
        self.vm_host[v] = d
        if secondary is not None:
            self.vm_secondary[v] = secondary
            self.mirrors.moved(v, copy)
        for h in {s, d, ss, secondary} - {None}:   # hbal re-judges N+1 on the hosts a move touches
            self.n1_fail[h] = self.unallocated[h] <= self.r_mem[h]
        return s, ss

def balance(state: ClusterState, policy: BalancePolicy = BalancePolicy()) -> Plan:
    """A Plan of moves that lowers hbal's score, best move first, each one fitting.

    Only auto-balanced VMs move, live-migratable ones to any host and DRBD-mirrored ones by
    hbal's failover and replace-disks moves, and none of a hard affinity group (moving one
    alone would split it). Stops when no move improves the score
    by enough (see BalancePolicy) or the move budget is spent; the plan's note says which.
    A VM the search moved more than once then goes straight to its last host, when every
    intermediate state still fits: the same end state with fewer migrations.
    """
    before = hbal_score(state, policy.dynamic_load, measured_cpu=policy.measured_cpu)
    work = _Balancer(state, policy)
    steps: list[tuple] = []   # (vm, from, to, reason, mirror from, mirror to)
    score_now = before
    names = state.host_names
    note = ("no move improves the score enough" if work.movable.any() or work.mirrors else
            "no VM can move (only auto-balanced VMs that can live-migrate or have a DRBD "
            "mirror do)")
    floor = lowest_score(state)
    while True:
        if policy.max_moves is not None and len(steps) >= policy.max_moves:
            note = f"move budget of {policy.max_moves} reached"
            break
        if score_now <= floor + MIN_IMPROVEMENT:
            note = ("the cluster is perfectly balanced" if floor == 0 else
                    "the cluster is as balanced as the memory its DRBD mirrors reserve allows")
            break
        found = work.best_move(score_now)
        if found is None:
            break
        gain, v, d, secondary, how = found
        p = int(work.vm_host[v])
        if how is None:
            effect = work.main_effect(v, (p, d), (p, d), gain)
            reason = f"{effect}, score -{gain:.4f}"
        else:
            copy = copy_move(p, int(work.vm_secondary[v]), d, secondary)
            effect = work.main_effect(v, (p, d) if d != p else None, copy, gain)
            reason = f"{how.describe(names[copy[1]] if copy else None)}: {effect}, score -{gain:.4f}"
        s, ss = work.apply(v, d, secondary)
        steps.append((v, s, d, reason, ss, secondary))
        score_now -= gain
    steps = _collapse(state, steps)
    moves = [Move(state.vms[v].name, names[s], names[d], reason,
                  src_secondary=None if ss is None else names[ss],
                  dst_secondary=None if ds is None else names[ds])
             for v, s, d, reason, ss, ds in steps]
    touched = np.zeros(state.n_hosts, dtype=bool)
    for _, s, d, _, ss, ds in steps:
        touched[[h for h in (s, d, ss, ds) if h is not None]] = True
    final = state.with_moves((m.vm, m.dst, m.dst_secondary) for m in moves) if moves else state
    after = hbal_score(final, policy.dynamic_load, touched, policy.measured_cpu)
    return Plan("balance", staged(moves), before, after, note=note)


def _collapse(state: ClusterState, steps: list) -> list:
    """Replace the moves of a VM moved several times by one move to its last host (or by
    none if it ends where it started), placed where its last move was, if that still fits.
    A DRBD-mirrored VM keeps its moves: each is a failover or disk replacement of its own."""
    current = list(steps)
    counts = Counter(step[0] for step in steps)
    for v in (v for v, n in counts.items() if n > 1 and state.vm_secondary[v] < 0):
        positions = [i for i, step in enumerate(current) if step[0] == v]
        first, last = current[positions[0]], current[positions[-1]]
        trial = [step for i, step in enumerate(current) if i not in positions[:-1]]
        at = positions[-1] - (len(positions) - 1)
        if first[1] == last[2]:
            del trial[at]
        else:
            trial[at] = (v, first[1], last[2],
                         f"{last[3]}; straight there instead of {len(positions)} moves", None, None)
        if _fits(state, trial):
            current = trial
    return current


def _fits(state: ClusterState, steps: list) -> bool:
    """Replay the steps with the balancer's rules: room (memory left over), VM count limits,
    hard anti-affinity. A mirrored VM's disk goes where its copy goes, not with the VM."""
    free = state.free.copy()
    count = state.vm_count.astype(float)
    where = state.vm_host.copy()
    hard = sorted(state.groups_with("anti-affinity"))
    members = {g: state.group_members(g).copy() for g in hard}
    for v, s, d, _, ss, ds in steps:
        demand = state.demand[v]
        if where[v] != s:
            return False
        gone, came = (s, d) if ss is None else copy_move(s, ss, d, ds) or (None, None)
        if came is not None:
            if demand[2] > free[came, 2] + EPSILON:
                return False
            free[gone, 2] += demand[2]
            free[came, 2] -= demand[2]
        if d == s:
            continue
        groups = [g for g in hard if g in state.vms[v].groups]
        if (demand[0] > free[d, 0] + EPSILON or not demand[1] < free[d, 1] - EPSILON
                or count[d] >= state.max_vms[d] or any(members[g][d] for g in groups)):
            return False
        free[s, :2] += demand[:2]
        free[d, :2] -= demand[:2]
        count[s] -= 1
        count[d] += 1
        where[v] = d
        for g in groups:
            members[g][s] -= 1
            members[g][d] += 1
    return True
