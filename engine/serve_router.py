"""sluice's workload-balanced dispatcher (engine/dispatch.py) as a Ray Serve request router.

Ray Serve asks a deployment's request router, in the process that holds the deployment handle,
which replicas may take each request (`choose_replicas`, a ranked list). `DispatchRouter` answers
with the replica the `Dispatcher` picks for the call (HEXGEN's score on outstanding work and the
call's estimated time on each replica, given the prefix that replica probably caches), then the
other candidates as the fallback rank. It reads the call from the `route` keyword argument of the
replica method (`engine.replicas.Route`); a request without one (a replica's `info`) may go to
any replica. The chosen replica counts the call's estimated work, and mirrors its prompt's
blocks, as soon as it is chosen, so that calls arriving together see each other; Serve then
reports where the request went (`on_request_routed`: a fallback replica takes the work over)
and when it finished (`on_request_completed`, a moment after the caller has its answer: a call
sent right after another one finished can still see that one's work on its replica).

Not chosen while another replica is available: the replicas the call already found dead
(`Route.avoid`) and those whose last routing stats say their engine is down
(`record_routing_stats` of engine/serve_replicas.py). Serve itself drops replicas whose actor
died and replaces those failing their health check; a replacement joins the dispatcher with an
empty prefix mirror.

The estimator of call times is the caller's (`shared_state`, in this process): the one that
splits workflow deadlines and learns from every replica's measured calls. A router in a process
without a caller's state learns nothing and balances by outstanding calls.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from .dispatch import Balanced, Dispatcher, RoundRobin
from .estimator import StageTimeEstimator
from .prefix_cache import PrefixIndex

DEFAULT_CAPACITY_BLOCKS = 1 << 16


@dataclass
class DispatchState:
    """What the caller shares with the router of its deployment in this process."""
    estimator: StageTimeEstimator = field(default_factory=StageTimeEstimator)
    capacity_blocks: int = DEFAULT_CAPACITY_BLOCKS     # each replica's KV cache, in blocks


_STATES: dict[str, DispatchState] = {}


def shared_state(key: str) -> DispatchState:
    """The state of the deployment named `key` in this process (made on first use)."""
    return _STATES.setdefault(key, DispatchState())


def forget_state(key: str) -> None:
    _STATES.pop(key, None)


class DispatchRouter(RequestRouter):
    """Ray Serve request router over sluice's `Dispatcher`; its kwargs (`request_router_kwargs`)
    as `initialize_state`'s."""

    def initialize_state(self, dispatch: str = "balanced", alpha: float = 0.5,
                         block_size: int = 32, max_load: int | None = None,
                         state_key: str | None = None, **_) -> None:
        rule = RoundRobin() if dispatch == "round-robin" else Balanced(alpha)
        self._state = shared_state(state_key) if state_key else DispatchState()
        self._block_size = block_size
        self._dispatcher = Dispatcher(rule, [], [], max_load)
        self._index: dict[ReplicaID, int] = {}
        self._routed: dict[str, tuple[int, float]] = {}    # request id -> replica, estimate
        self._lock = threading.Lock()      # Serve's callbacks need not run on the router's loop

    def _replica(self, replica_id: ReplicaID) -> int:
        """The dispatcher's index of a replica (a new one joins with an empty prefix mirror)."""
        if replica_id not in self._index:
            self._index[replica_id] = self._dispatcher.add_replica(
                self._state.estimator, PrefixIndex(self._block_size, self._state.capacity_blocks))
        return self._index[replica_id]

    @staticmethod
    def _usable(replica: RunningReplica, avoid: tuple[str, ...]) -> bool:
        return (replica.replica_id.unique_id not in avoid
                and replica.routing_stats.get("engine_ok", True))

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[RunningReplica]]:
        route = pending_request.kwargs.get("route") if pending_request is not None else None
        if route is None or not candidate_replicas:
            return [candidate_replicas]
        usable = [r for r in candidate_replicas if self._usable(r, route.avoid)]
        usable = usable or candidate_replicas          # all suspect: let Serve try them
        with self._lock:
            by_index = {self._replica(r.replica_id): r for r in usable}
            best, times = self._dispatcher.choose(route.kind, route.prompt_tokens,
                                                  route.max_tokens, route.hashes, among=list(by_index))
            self._count(pending_request.metadata.internal_request_id, best, times[best], route)
        rest = sorted((e for e in by_index if e != best), key=lambda e: times[e])
        return [[by_index[best]]] + ([[by_index[e] for e in rest]] if rest else [])

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result) -> None:
        route = pending_request.kwargs.get("route")
        if route is None:
            return
        request_id = pending_request.metadata.internal_request_id
        with self._lock:
            e = self._replica(replica_id)
            if self._routed.get(request_id, (None,))[0] != e:
                estimate = self._dispatcher.call_times(route.kind, route.prompt_tokens,
                                                       route.max_tokens, route.hashes)[e]
                self._count(request_id, e, estimate, route)

    def _count(self, request_id: str, e: int, estimate: float, route) -> None:
        """The request's work is on replica e now (off the one it was counted on, if another)."""
        earlier = self._routed.pop(request_id, None)
        if earlier is not None:
            self._dispatcher.finished(*earlier)
        self._dispatcher.sent(e, estimate, route.hashes)
        self._routed[request_id] = e, estimate

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        with self._lock:
            routed = self._routed.pop(internal_request_id, None)   # also fires for rejections
            if routed is not None:
                self._dispatcher.finished(*routed)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        with self._lock:
            e = self._index.get(replica_id)
            if e is not None:
                self._dispatcher.alive[e] = False
                self._dispatcher.prefixes[e].clear()
