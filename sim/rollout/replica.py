"""A vLLM-like generation replica: continuous batching under a KV-cache limit, advanced analytically.

Between two state changes (an admission, a completion, a preemption, a scheduler action) the batch is
fixed and each decode step adds one token per sequence, so the time to the next state change is the
closed-form sum of `sim.perf.base.steps_sum_s`. A replica therefore yields one SimPy timeout per state
change, not per token (design.md section 3). `mode="step"` yields once per decode step instead; it
exists as the reference the analytic mode is tested against. Unwatched (nothing acts on or reads it
mid-batch) and with nothing waiting, a replica runs its batch down in one pass (`Replica._advance_alone`):
the same state changes and sums in the same order, without a heap pop or dict update per completion.

KV-cache policy (as vLLM's scheduler): a waiting sequence is admitted when the tokens it holds *now*
(its prompt, unless its group's prompt is already resident and prefix sharing is on, plus anything it
generated before) fit under capacity minus a watermark; it does not reserve its maximum length. When a
decode step would overflow the cache, the most recently admitted sequence is preempted (recompute
mode): its KV is dropped and it goes back to the front of the queue, to be prefilled again
(prompt + tokens generated so far) when readmitted. Memory is counted in tokens, not 16-token blocks.

Not modelled: chunked-prefill interleaving (an admission's prefill runs before the next decode step),
speculative decoding, CPU swap space, block-level fragmentation.

One file on purpose (over the ~400-line limit): it is the engine's hot loop (`Replica._run` and the
admission, step and preemption code it calls per event), kept together so it stays fast and readable as one.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from itertools import accumulate
from typing import Any, Protocol

import simpy

from sim.errors import SchedulerActionError  # noqa: F401 (re-exported)
from sim.perf.base import ReplicaPerf, steps_sum_s, steps_within


class SeqTable:
    """Every sequence of one rollout batch as parallel lists (index = sequence id); shared by replicas."""

    __slots__ = (
        "prompt_tokens",
        "target_tokens",
        "generated",
        "group",
        "cached_prefix",
        "kv_ready",
        "finish_s",
        "replica_of",
        "preemptions",
        "recomputed_tokens",
        "migrations",
    )

    def __init__(self, prompt_tokens: list[int], target_tokens: list[int], group: list[int]):
        n = len(target_tokens)
        if not (len(prompt_tokens) == len(group) == n):
            raise ValueError("prompt_tokens, target_tokens and group must have one entry per sequence")
        self.prompt_tokens = prompt_tokens
        self.target_tokens = target_tokens
        self.group = group
        self.generated = [0] * n
        self.cached_prefix = [0] * n  # prompt tokens whose KV arrives precomputed (deduplicated prefill)
        self.kv_ready = [False] * n  # KV of prompt + generated present on arrival (migrated with its cache)
        self.finish_s = [float("nan")] * n
        self.replica_of = [-1] * n
        self.preemptions = 0
        self.recomputed_tokens = 0
        self.migrations = 0

    def __len__(self) -> int:
        return len(self.target_tokens)


class ReplicaListener(Protocol):
    def on_completed(self, replica: "Replica", seqs: list[int]) -> None: ...

    def on_migrated_out(self, replica: "Replica", seqs: list[int], kv_tokens: list[int], dst: "Replica") -> None: ...

    def on_idle(self, replica: "Replica") -> None: ...

    # optional `watching: bool` (default True): False promises that nothing acts on a replica (enqueue,
    # migrate, release, fail) or reads its state while its batch runs, and that completions may be
    # reported together when it ends; the replica then yields once per batch instead of once per state change


def landing_delays(now: float, when: float) -> list[float]:
    """Timeout delays that take SimPy's clock (it adds each delay to `now`) from `now` to exactly `when` >= now.

    `when - now` is exact, and so is the sum, when now >= when / 2 (Sterbenz); from further below, one stop
    at about 3/4 of `when` comes first (a single delay cannot reach every float from there).
    """
    delays = []
    d = when - now
    if now + d != when:
        stop = 0.75 * when - now
        delays.append(stop)
        now = now + stop
        d = when - now
    if now + d != when:  # pragma: no cover - excluded by the lemma above
        raise RuntimeError(f"no delay takes the clock from {now!r} to {when!r}")
    delays.append(d)
    return delays


class Replica:
    """One generation engine on `perf.tp` GPUs. Work arrives with `enqueue`; actions apply at step boundaries."""

    def __init__(
        self,
        env: simpy.Environment,
        replica_id: int,
        perf: ReplicaPerf,
        table: SeqTable,
        kv_capacity_tokens: int,
        listener: ReplicaListener,
        max_num_seqs: int = 256,
        watermark_tokens: int = 0,
        prefix_sharing: bool = True,
        step_mode: bool = False,
        reserve_tokens: int = 0,
    ):
        if kv_capacity_tokens <= watermark_tokens:
            raise ValueError("KV capacity must exceed the watermark")
        self.env = env
        self.id = replica_id
        self.perf = perf
        self.table = table
        self.cap = int(kv_capacity_tokens) - int(watermark_tokens)  # admission and growth limit
        self.listener = listener
        self.max_num_seqs = max_num_seqs
        self.prefix_sharing = prefix_sharing
        self.step_mode = step_mode
        # 0: vLLM's policy (a sequence holds the KV of the tokens it has now and grows). > 0: reserve this
        # many response tokens at admission (static allocation up to the maximum length), no growth, no
        # preemption; for comparing the two policies (docs/model.md)
        self.reserve = int(reserve_tokens)
        # state
        self.steps = 0  # decode steps done since creation
        self.running: dict[int, int] = {}  # seq -> finish step (insertion order = admission order)
        # running sequences by finish step, each as one int key `finish step * len(table) + seq` (ordered as
        # the pair, cheaper to compare). Removal out of finish order (preemption, migration) leaves the key
        # in place: a key is live iff running[seq] == its finish step; `stale` counts the others, which are
        # skipped when they surface and compacted away once they outnumber the live ones
        self._key_base = max(len(table), 1)
        self.heap: list[int] = []
        self.stale = 0
        self.waiting: deque[int] = deque()
        self.ctx = 0  # total context of running sequences (what attention reads)
        self.mem = 0  # KV tokens held (a group's shared prompt counted once)
        self.group_refs: dict[int, int] = {}
        self.group_prompt: dict[int, int] = {}  # tokens charged when the group's prompt became resident
        self._pending: list[tuple[str, Any]] = []
        self._pending_prefill_s = 0.0
        self.proc: simpy.Process | None = None
        self._interruptible = False
        self._landing = False  # an unwatched replica waiting for the clock to reach the end of its batch
        self.released = False
        self.failed = False
        self.busy_since: float | None = None
        self.busy_intervals: list[tuple[float, float]] = []
        self.events = 0  # state changes simulated (analytic segments; each a timeout unless unwatched)
        self.peak_batch = 0  # largest running batch seen
        self.batch_steps: dict[int, int] = {}  # decode steps run per batch size (early exit's executed depth)
        self.prefill_tokens = 0

    # ------------------------------------------------------------------ external API (mechanism)
    def enqueue(self, seqs: list[int]) -> None:
        """Add sequences to the waiting queue; they are admitted at the next step boundary."""
        if self.released:
            raise SchedulerActionError(f"replica {self.id} was released; it cannot take work")
        rep = self.table.replica_of
        for s in seqs:
            rep[s] = self.id
        self.waiting.extend(seqs)
        self._wake()

    def migrate_out(self, dst: "Replica", seqs: list[int] | None = None) -> None:
        """Move unfinished sequences (all if None) to dst at this replica's next step boundary."""
        self._pending.append(("migrate", (dst, seqs)))
        self._wake()

    def release(self) -> None:
        """Stop this replica once it is empty (a scheduler migrates its work away first)."""
        self._pending.append(("release", None))
        self._wake()

    def fail(self) -> tuple[list[int], int]:
        """The instance under this replica crashed: every unfinished sequence loses its KV and tokens.

        Returns the sequences (to be regenerated from scratch elsewhere) and the tokens thrown away.
        """
        if self._landing:
            raise SchedulerActionError(f"replica {self.id}: crashed while unwatched (its listener must watch when instances can fail)")
        table = self.table
        lost = list(self.running) + list(self.waiting)
        tokens = sum(self.generated_now(s) for s in self.running) + sum(table.generated[s] for s in self.waiting)
        for s in lost:
            table.generated[s] = 0
            table.kv_ready[s] = False
            table.replica_of[s] = -1
        self.running.clear()
        self.heap.clear()
        self.stale = 0
        self.waiting.clear()
        self.group_refs.clear()
        self.group_prompt.clear()
        self.ctx = self.mem = 0
        self._pending.clear()
        self.failed = self.released = True
        if self.proc is not None and self.proc.is_alive:
            self.proc.interrupt("failed")
        elif self.busy_since is not None:
            self.busy_intervals.append((self.busy_since, self.env.now))
            self.busy_since = None
        return lost, tokens

    @property
    def unfinished(self) -> int:
        return len(self.running) + len(self.waiting)

    def generated_now(self, seq: int) -> int:
        fin = self.running.get(seq)
        if fin is None:
            return self.table.generated[seq]
        return self.table.target_tokens[seq] - (fin - self.steps)

    # ------------------------------------------------------------------ process
    def _wake(self) -> None:
        if self._landing:
            raise SchedulerActionError(f"replica {self.id}: its listener is not watching (no actions mid-batch) but it was given one")
        if self.proc is None or not self.proc.is_alive:
            if self.waiting or self._pending:
                self.proc = self.env.process(self._run())
        elif self._interruptible:
            self._interruptible = False
            self.proc.interrupt()

    def _run(self):  # noqa: C901 - the hot loop is kept in one place on purpose
        env = self.env
        table = self.table
        perf = self.perf
        target, generated, finish_s = table.target_tokens, table.generated, table.finish_s
        prompts, groups = table.prompt_tokens, table.group
        refs, group_prompt, sharing = self.group_refs, self.group_prompt, self.prefix_sharing
        running = self.running  # mutated in place, never rebound
        n = self._key_base
        heappop = heapq.heappop
        # unwatched: nothing can act on or read this replica before its batch is done, so it advances through
        # its state changes on a clock of its own (the sums SimPy's clock would make), reports every
        # completion at the end and yields once, landing exactly on the time it would have reached
        unwatched = not getattr(self.listener, "watching", True)
        finished: list[int] = []
        now = env.now
        if self.busy_since is None:
            self.busy_since = now
        while True:
            if self._pending:
                self._apply_pending()
            if self.waiting:
                self._admit()
            if not running:
                if self.waiting:  # pragma: no cover - guarded by the feasibility check
                    raise RuntimeError(f"replica {self.id}: a waiting sequence cannot fit in an empty KV cache")
                break
            b = len(running)
            if b > self.peak_batch:
                self.peak_batch = b
            k_mem = (self.cap - self.mem) // b if not self.reserve else 1 << 62
            if k_mem <= 0:
                self._preempt_for_growth(b)
                continue
            if unwatched and not self.waiting:  # no admission before the batch drains or outgrows its cache
                now = self._advance_alone(now, finished)
                continue
            if self.stale:
                self._drop_stale_top()
            k = self.heap[0] // n - self.steps
            if k_mem < k:
                k = k_mem
            if self.step_mode and k > 1:
                k = 1
            co = perf.decode_coeffs(b)
            prefill = self._pending_prefill_s
            self._pending_prefill_s = 0.0
            ctx = self.ctx
            dt = prefill + steps_sum_s(co, b, ctx, k)
            self.events += 1
            if unwatched:
                now += dt  # what SimPy's clock would read after a timeout of dt
            else:
                start = env.now
                self._interruptible = True
                try:
                    yield env.timeout(dt)
                    self._interruptible = False
                    now = env.now
                except simpy.Interrupt:
                    self._interruptible = False
                    if self.failed:
                        break
                    budget = env.now - start - prefill
                    kb = 0 if budget <= 0 else steps_within(co, b, ctx, k, budget)
                    boundary = start + prefill + steps_sum_s(co, b, ctx, kb)
                    while env.now < boundary:  # finish the step in flight; later wakes wait for this boundary
                        self.events += 1
                        try:
                            yield env.timeout(boundary - env.now)
                        except simpy.Interrupt:  # only a crash interrupts here
                            break
                    if self.failed:
                        break
                    k = kb
                    now = env.now
            # advance k steps
            steps = self.steps = self.steps + k
            self.batch_steps[b] = self.batch_steps.get(b, 0) + k
            grow = b * k
            ctx += grow
            if not self.reserve:
                self.mem += grow
            heap = self.heap
            limit = (steps + 1) * n  # every entry finishes at `steps` or later: key < limit <=> it finishes now
            if heap and heap[0] < limit:
                done = finished if unwatched else []
                freed = 0
                reserve = self.reserve
                while heap and heap[0] < limit:
                    key = heappop(heap)
                    s = key % n
                    if self.stale and running.get(s) != key // n:  # left behind by a preemption or migration
                        self.stale -= 1
                        continue
                    del running[s]
                    done.append(s)
                    tgt = target[s]
                    generated[s] = tgt
                    finish_s[s] = now
                    p = prompts[s]
                    ctx -= p + tgt
                    freed += reserve or tgt
                    if not sharing:
                        freed += p
                    else:  # the group's prompt is freed with its last sequence
                        grp = groups[s]
                        left = refs[grp] - 1
                        if left:
                            refs[grp] = left
                        else:
                            del refs[grp]
                            freed += group_prompt.pop(grp)
                self.mem -= freed
                self.ctx = ctx
                if not unwatched:
                    self.listener.on_completed(self, done)
            else:
                self.ctx = ctx
        if unwatched:
            if now > env.now:
                self._landing = True
                for delay in landing_delays(env.now, now):
                    yield env.timeout(delay)
                self._landing = False
            if finished:
                self.listener.on_completed(self, finished)
        self.busy_intervals.append((self.busy_since, env.now))
        self.busy_since = None
        if not self.failed:
            self.listener.on_idle(self)

    def _advance_alone(self, now: float, finished: list[int]) -> float:
        """Unwatched, nothing waiting: run the batch down on this replica's own clock; return the clock.

        The same state changes as `_run`'s loop, with the same sums in the same order, but the sequences
        sorted once by finish step and their KV and context releases summed up front (integers: any order
        is exact), so that each state change costs O(1) Python work and each completion a few list stores.
        Stops when the batch is done or the next step would overflow the KV cache (`_run` preempts).
        """
        table = self.table
        running, n, reserve, cap, step_mode = self.running, self._key_base, self.reserve, self.cap, self.step_mode
        target, prompts = table.target_tokens, table.prompt_tokens
        order = sorted([fin * n + s for s, fin in running.items()])  # the live heap keys, in completion order
        seqs = [key % n for key in order]
        fins = [key // n for key in order]
        total = len(seqs)
        # context and KV released by the first j completions: ctx_out[j], mem_out[j]
        ctx_out = list(accumulate([prompts[s] + target[s] for s in seqs], initial=0))
        if reserve:
            freed = [reserve] * total
        else:
            freed = [target[s] for s in seqs]
        groups, group_prompt = table.group, self.group_prompt
        if self.prefix_sharing:  # a group's prompt is freed with its last running sequence
            last = {groups[s]: j for j, s in enumerate(seqs)}
            for grp, j in last.items():
                freed[j] += group_prompt[grp]
        else:
            freed = [f + prompts[s] for f, s in zip(freed, seqs)]
        mem_out = list(accumulate(freed, initial=0))
        batch_steps, decode_coeffs, ceil = self.batch_steps, self.perf.decode_coeffs, math.ceil
        steps, mem, ctx = self.steps, self.mem, self.ctx
        # growth the KV cache can hold even if nothing were freed: the memory limit cannot bind, skip it
        growth = sum(fins) - total * steps
        check_mem = not reserve and mem + growth > cap
        k_max = 1 if step_mode else 1 << 62
        prefill = self._pending_prefill_s
        self._pending_prefill_s = 0.0
        done = 0
        marks: list[tuple[int, float]] = []  # (completions so far, clock) after each state change that completes some
        events = 0
        while done < total:
            b = total - done
            k = fins[done] - steps
            if check_mem:
                k_mem = (cap - mem) // b
                if k_mem <= 0:
                    break
                if k_mem < k:
                    k = k_mem
            if k > k_max:
                k = k_max
            # dt = steps_sum_s(decode_coeffs(b), b, ctx, k) inlined: the same operations in the same order
            co = decode_coeffs(b)
            c1, m1 = co.c1, co.m1
            ac = co.c0 + c1 * ctx
            sc = c1 * b
            am = co.m0 + m1 * ctx
            sm = m1 * b
            da, ds = ac - am, sc - sm
            if ds == 0.0:
                split = k
                first_is_memory = da < 0
            else:
                split = ceil(-da / ds)
                if split < 0:
                    split = 0
                elif split > k:
                    split = k
                first_is_memory = ds > 0
            a1, s1, a2, s2 = (am, sm, ac, sc) if first_is_memory else (ac, sc, am, sm)
            n2 = k - split
            total_s = (split * a1 + s1 * (split - 1) * split / 2.0 if split > 0 else 0.0) + (
                n2 * a2 + s2 * (split + k - 1) * n2 / 2.0 if n2 > 0 else 0.0
            )
            now += prefill + (total_s + k * co.overhead_s)  # k >= 1: the top finishes after `steps`, k_mem > 0
            prefill = 0.0
            events += 1
            steps += k
            batch_steps[b] = batch_steps.get(b, 0) + k
            grow = b * k
            ctx += grow
            if check_mem:
                mem += grow
            j = bisect_right(fins, steps, done)
            if j > done:
                ctx -= ctx_out[j] - ctx_out[done]
                if check_mem:
                    mem -= mem_out[j] - mem_out[done]
                marks.append((j, now))
                done = j
        if not check_mem:  # all done: it grew by every remaining step (unless reserved) and freed all it held
            mem += (0 if reserve else growth) - mem_out[done]
        # the completions, as `_run` records them
        generated, finish_s = table.generated, table.finish_s
        i = 0
        for j, t in marks:
            for s in seqs[i:j]:
                finish_s[s] = t
                generated[s] = target[s]
            i = j
        out = seqs[:done]
        finished.extend(out)
        if done == total:
            running.clear()
            if self.prefix_sharing:
                self.group_refs.clear()
                group_prompt.clear()
        else:
            refs = self.group_refs
            for s in out:
                del running[s]
                if self.prefix_sharing:
                    grp = groups[s]
                    left = refs[grp] - 1
                    if left:
                        refs[grp] = left
                    else:
                        del refs[grp]
                        del group_prompt[grp]
        del order[:done]
        self.heap, self.stale = order, 0  # a sorted list is a heap
        self.steps, self.mem, self.ctx = steps, mem, ctx
        self.events += events
        return now

    # ------------------------------------------------------------------ state changes at boundaries
    def _drop_group_ref(self, group: int, prompt: int) -> int:
        """Release one sequence's hold on its group's prompt; return prompt tokens freed."""
        if not self.prefix_sharing:
            return prompt
        refs = self.group_refs
        n = refs[group] - 1
        if n:
            refs[group] = n
            return 0
        del refs[group]
        return self.group_prompt.pop(group)

    def _admit(self) -> None:
        """Admit waiting sequences, oldest first, while the batch has a slot and the KV cache room."""
        table = self.table
        prompts, gen, groups = table.prompt_tokens, table.generated, table.group
        cached, kv_ready, target = table.cached_prefix, table.kv_ready, table.target_tokens
        refs, group_prompt = self.group_refs, self.group_prompt
        running, heap, waiting = self.running, self.heap, self.waiting
        n, sharing, reserve, cap, steps, max_seqs = self._key_base, self.prefix_sharing, self.reserve, self.cap, self.steps, self.max_num_seqs
        mem, ctx, b = self.mem, self.ctx, len(running)
        new_tokens = recomputed = 0
        pairs = 0.0
        admitted: list[int] = []
        fins: list[int] = []
        for s in waiting:  # taken off the queue below, once the loop is done with it
            if b >= max_seqs:
                break
            p, g, grp = prompts[s], gen[s], groups[s]
            shared = sharing and grp in refs
            need = (reserve or g) + (0 if shared else p)
            # room for the sequence and for one more decode step of the whole batch, so that an
            # admission is never undone by an immediate preemption (reserved room does not grow)
            if mem + need + (0 if reserve else b + 1) > cap:
                break
            if kv_ready[s]:
                kv_ready[s] = False
            else:
                fresh_prompt = 0 if shared else p - cached[s]
                prior = p - fresh_prompt
                if fresh_prompt > 0:
                    pairs += fresh_prompt * (prior + fresh_prompt / 2.0)
                if g > 0:
                    pairs += g * (p + g / 2.0)
                    recomputed += g
                new_tokens += fresh_prompt + g
            if sharing:
                if shared:
                    refs[grp] += 1
                else:
                    refs[grp] = 1
                    group_prompt[grp] = p
            mem += need
            ctx += p + g
            b += 1
            admitted.append(s)
            fins.append(steps + target[s] - g)
        if admitted:
            if len(admitted) == len(waiting):
                waiting.clear()
            else:
                for _ in admitted:
                    waiting.popleft()
            running.update(zip(admitted, fins))
            keys = [fin * n + s for s, fin in zip(admitted, fins)]
            if len(keys) > len(heap):  # the order keys pop in does not depend on the heap's layout
                heap.extend(keys)
                heapq.heapify(heap)
            else:
                push = heapq.heappush
                for key in keys:
                    push(heap, key)
        self.mem, self.ctx = mem, ctx
        table.recomputed_tokens += recomputed
        if new_tokens:
            self.prefill_tokens += new_tokens
            self._pending_prefill_s += self.perf.prefill_s(new_tokens, pairs)

    def _remove_running(self, seqs: list[int]) -> list[int]:
        """Take running sequences out (their KV leaves with them); return tokens generated by each."""
        out = [self._take_out(s) for s in seqs]
        self._compact()
        return out

    def _take_out(self, s: int) -> int:
        """Remove one running sequence, leaving its heap entry stale; return the tokens it generated."""
        table = self.table
        fin = self.running.pop(s)
        g = table.target_tokens[s] - (fin - self.steps)
        table.generated[s] = g
        p = table.prompt_tokens[s]
        self.ctx -= p + g
        self.mem -= (self.reserve or g) + self._drop_group_ref(table.group[s], p)
        self.stale += 1
        return g

    def _compact(self) -> None:
        """Rebuild the heap from the live entries once stale ones outnumber them (amortised O(1) per removal)."""
        if self.stale > len(self.running):
            n = self._key_base
            self.heap = [fin * n + s for s, fin in self.running.items()]
            heapq.heapify(self.heap)
            self.stale = 0

    def _drop_stale_top(self) -> None:
        """Pop stale entries off the top, so heap[0] is the next live completion."""
        heap, running, n = self.heap, self.running, self._key_base
        while heap and running.get(heap[0] % n) != heap[0] // n:
            heapq.heappop(heap)
            self.stale -= 1

    def _preempt_for_growth(self, b: int) -> None:
        """Free KV for the next step by preempting the newest sequences (vLLM recompute preemption)."""
        table = self.table
        target, generated, prompts, groups = table.target_tokens, table.generated, table.prompt_tokens, table.group
        running, steps, reserve, cap = self.running, self.steps, self.reserve, self.cap
        mem, ctx = self.mem, self.ctx
        victims = []
        while running and cap - mem < len(running):
            s, fin = running.popitem()  # the most recently admitted (a dict pops in LIFO order)
            g = generated[s] = target[s] - (fin - steps)
            p = prompts[s]
            ctx -= p + g
            mem -= (reserve or g) + self._drop_group_ref(groups[s], p)
            victims.append(s)
        self.mem, self.ctx = mem, ctx
        self.stale += len(victims)  # their heap keys stay behind
        self._compact()
        table.preemptions += len(victims)
        self.waiting.extendleft(victims)  # oldest victim ends up first

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, []
        for kind, arg in pending:
            if kind == "migrate":
                dst, seqs = arg
                if dst is self:
                    raise SchedulerActionError(f"replica {self.id}: cannot migrate sequences to itself")
                chosen = list(self.running) + list(self.waiting) if seqs is None else list(seqs)
                here_running = [s for s in chosen if s in self.running]
                waiting_set = set(self.waiting)
                here_waiting = [s for s in chosen if s in waiting_set]
                if len(here_running) + len(here_waiting) != len(chosen):
                    # a sample may have finished during the step in flight when the action was issued
                    finish = self.table.finish_s
                    missing = [s for s in chosen if s not in self.running and s not in waiting_set and finish[s] != finish[s]]
                    if missing:
                        raise SchedulerActionError(f"replica {self.id}: cannot migrate sequences it does not hold: {missing[:5]}")
                gens = self._remove_running(here_running)
                if here_waiting:
                    leaving = set(here_waiting)
                    self.waiting = deque(s for s in self.waiting if s not in leaving)
                kv = [self.table.prompt_tokens[s] + g for s, g in zip(here_running, gens)] + [0] * len(here_waiting)
                moved = here_running + here_waiting
                for s in here_running:  # their KV travels with them: no prefill at the destination
                    self.table.kv_ready[s] = True
                self.table.migrations += len(moved)
                self.listener.on_migrated_out(self, moved, kv, dst)
            elif kind == "release":
                if self.running or self.waiting:
                    raise SchedulerActionError(
                        f"replica {self.id}: released with {self.unfinished} unfinished sequences; migrate them first"
                    )
                self.released = True
