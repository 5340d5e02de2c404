"""The promoter's state in Redis: one optimistic transaction per batch, so that a replay
double-counts nothing.

Keys, under ``<prefix>promoter:``:
    c:<complaint id>     hash: a / s / f (compact allocation, shadow, feedback), j / sj (join
                         markers); TTL join_ttl_s from its first record
    parked               zset: complaint id -> when its feedback was parked (waiting for the
                         allocation)
    joined               zset: complaint id -> when joined (what ``export`` reads); trimmed
                         after join_ttl_s
    exp:<experiment id>  hash: the experiment (``Experiment.to_fields``), its counters,
                         ``decision``; TTL join_ttl_s from its last label, so a running
                         experiment never expires
    experiments          zset: experiment id -> last label time
    summary              hash: ``<kind>.<outcome>`` counters (what ``status`` prints)
    live                 hash: live accuracy / recall counters (``join.live_field``)
    malformed            list: the last 1000 refused records (coordinates and reason, never
                         content)
    offset:<topic>:<p>   the next offset applied from that partition

Protocol of ``apply`` (one batch), retried from 1 when another writer touched a watched key:
1. WATCH the batch's offset keys, complaint keys and running experiments; read them (one round
   trip).
2. Drop records below their partition's applied offset: they were applied before a crash (replay).
3. Apply the rest, in order, to the states in memory (``join.Joiner``); for each undecided
   experiment, find the first label after which the rule decides (``decider``:
   ``evaluate.Evaluator.decider``).
4. MULTI: every changed field, counter, index, decision and the new offsets; EXEC.
The caller commits the Kafka offsets only after EXEC, and a crash in between replays records that
step 2 drops.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from consumer.errors import StoreUnavailableError
from consumer.store import map_redis_errors
from promoter.experiments import Experiment
from promoter.join import ComplaintState, Delta, Joiner
from promoter.records import Decoded

Decider = (
    Callable[[Experiment, Mapping[str, str], Sequence[Mapping[str, int]]], dict[str, Any] | None]
    | None
)
MALFORMED_KEPT = 1000
MAX_ATTEMPTS = 20


class Keys:
    def __init__(self, prefix: str) -> None:
        self.base = f"{prefix}promoter:"
        self.parked = f"{self.base}parked"
        self.joined = f"{self.base}joined"
        self.experiments = f"{self.base}experiments"
        self.summary = f"{self.base}summary"
        self.live = f"{self.base}live"
        self.malformed = f"{self.base}malformed"

    def complaint(self, cid: str) -> str:
        return f"{self.base}c:{cid}"

    def experiment(self, exp_id: str) -> str:
        return f"{self.base}exp:{exp_id}"

    def offset(self, topic: str, partition: int) -> str:
        return f"{self.base}offset:{topic}:{partition}"


class JoinStore:
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        # redis-py types every result as "sync or awaitable"; this client is synchronous
        self.r: Any = client
        self.keys = Keys(prefix)
        self.ttl_s = ttl_s

    def apply(
        self,
        batch: Sequence[Decoded],
        experiments: Mapping[str, Experiment],
        now: float,
        decider: Decider = None,
    ) -> Delta:
        """Apply one batch atomically (module docstring); returns what changed, for metrics and
        evaluation."""
        k = self.keys
        parts = sorted({(d.topic, d.partition) for d in batch})
        cids = sorted({d.complaint_id for d in batch if d.complaint_id})
        exps = sorted(e.id for e in experiments.values())
        watched = (
            [k.offset(*tp) for tp in parts]
            + [k.complaint(c) for c in cids]
            + [k.experiment(e) for e in exps]
        )
        with map_redis_errors("promoter state"):
            for _ in range(MAX_ATTEMPTS):
                with self.r.pipeline() as pipe:
                    try:
                        pipe.watch(*watched)
                        delta, states, offsets = self._prepare(
                            batch, parts, cids, experiments, now, decider
                        )
                        pipe.multi()
                        self._write(pipe, delta, states, offsets, now)
                        pipe.execute()
                        return delta
                    except redis.WatchError:
                        continue  # another replica wrote one of our keys: read again
        raise StoreUnavailableError(f"promoter state: {MAX_ATTEMPTS} conflicting writers in a row")

    def _prepare(
        self,
        batch: Sequence[Decoded],
        parts: list[tuple[str, int]],
        cids: list[str],
        experiments: Mapping[str, Experiment],
        now: float,
        decider: Decider,
    ) -> tuple[Delta, dict[str, ComplaintState], dict[tuple[str, int], int]]:
        # Reads on another connection, after the WATCH: a write by anyone in between still aborts
        # our EXEC.
        reader = self.r.pipeline(transaction=False)
        for tp in parts:
            reader.get(self.keys.offset(*tp))
        for cid in cids:
            reader.hgetall(self.keys.complaint(cid))
        for exp in experiments.values():
            reader.hgetall(self.keys.experiment(exp.id))
        values = reader.execute()
        applied = {
            tp: int(v) if v is not None else -1
            for tp, v in zip(parts, values[: len(parts)], strict=True)
        }
        n = len(parts) + len(cids)
        states = {
            c: ComplaintState.of(v) for c, v in zip(cids, values[len(parts) : n], strict=True)
        }
        counters = {
            e.id: {k.decode(): v.decode() for k, v in raw.items()}
            for e, raw in zip(experiments.values(), values[n:], strict=True)
        }
        offsets: dict[tuple[str, int], int] = {}
        delta, joiner = Delta(), Joiner(experiments, self.ttl_s, now)
        for rec in batch:
            tp = (rec.topic, rec.partition)
            if rec.offset < applied[tp]:
                delta.count(rec.kind, "replayed")
                continue
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
            if rec.error:
                delta.count(rec.kind, "malformed")
                where = {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset}
                delta.malformed.append({"kind": rec.kind, **where, "error": rec.error, "at": now})
            else:
                joiner.apply(states[rec.complaint_id], rec, delta)
        for exp_id, labels in delta.labels.items():
            fields = counters.get(exp_id, {})
            if decider is not None and "decision" not in fields:
                doc = decider(delta.touched[exp_id], fields, labels)
                if doc is not None:
                    delta.decisions[exp_id] = doc
        return delta, states, offsets

    def _write(
        self,
        pipe: redis.client.Pipeline,
        delta: Delta,
        states: Mapping[str, ComplaintState],
        offsets: Mapping[tuple[str, int], int],
        now: float,
    ) -> None:
        k, ttl = self.keys, self.ttl_s
        for cid, st in states.items():
            if st.changed:
                pipe.hset(k.complaint(cid), mapping=st.changed)
                if not st.exists:
                    pipe.expire(k.complaint(cid), ttl)
        for name, n in delta.summary.items():
            pipe.hincrby(k.summary, name, n)
        for name, n in delta.live.items():
            pipe.hincrby(k.live, name, n)
        for exp_id, incs in delta.experiments.items():
            key = k.experiment(exp_id)
            pipe.hset(key, mapping=delta.touched[exp_id].to_fields())
            for name, n in incs.items():
                pipe.hincrby(key, name, n)
            if (
                exp_id in delta.decisions
            ):  # no decision at read time, and the key is watched: this sets it
                pipe.hsetnx(key, "decision", json.dumps(delta.decisions[exp_id]))
            pipe.expire(key, ttl)
            pipe.zadd(k.experiments, {exp_id: now})
        if delta.parked:
            pipe.zadd(k.parked, delta.parked)
        if delta.unparked:
            pipe.zrem(k.parked, *delta.unparked)
        if delta.joined:
            pipe.zadd(k.joined, delta.joined)
        if delta.malformed:
            pipe.lpush(k.malformed, *(json.dumps(m) for m in delta.malformed))
            pipe.ltrim(k.malformed, 0, MALFORMED_KEPT - 1)
        for tp, offset in offsets.items():
            pipe.set(k.offset(*tp), offset)

    def sweep(self, now: float, limit: int = 1000) -> int:
        """Count feedback parked for longer than join_ttl_s as ``unknown`` (once, whoever sweeps);
        trim indexes."""
        k, cutoff = self.keys, now - self.ttl_s

        def txn(pipe: Any) -> int:
            stale = pipe.zrangebyscore(k.parked, "-inf", cutoff, start=0, num=limit)
            pipe.multi()
            if stale:
                pipe.zrem(k.parked, *stale)
                pipe.hincrby(k.summary, "feedback.unknown", len(stale))
            pipe.zremrangebyscore(k.joined, "-inf", cutoff)
            pipe.zremrangebyscore(k.experiments, "-inf", cutoff)
            return len(stale)

        with map_redis_errors("promoter sweep"):
            return int(self.r.transaction(txn, k.parked, value_from_callable=True))

    def summary(self) -> dict[str, int]:
        with map_redis_errors("promoter summary"):
            raw = self.r.hgetall(self.keys.summary)
            parked = self.r.zcard(self.keys.parked)
        return {k.decode(): int(v) for k, v in raw.items()} | {"feedback.parked_now": int(parked)}

    def live(self) -> dict[str, int]:
        with map_redis_errors("promoter live counters"):
            return {k.decode(): int(v) for k, v in self.r.hgetall(self.keys.live).items()}

    def malformed(self, n: int = 10) -> list[dict[str, Any]]:
        with map_redis_errors("promoter malformed log"):
            return [json.loads(x) for x in self.r.lrange(self.keys.malformed, 0, n - 1)]
