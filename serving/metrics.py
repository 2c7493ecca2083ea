"""Prometheus metrics of one server: its own registry, engine figures read at each scrape."""

from __future__ import annotations

import itertools
from collections import defaultdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120)


class ServeMetrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("sluice_requests", "HTTP responses by route and status",
                                ["route", "status"], registry=r)
        self.refusals = Counter("sluice_refusals", "requests refused, by reason", ["reason"], registry=r)
        self.disconnects = Counter("sluice_client_disconnects",
                                   "requests whose client left; their LLM calls were aborted",
                                   ["route"], registry=r)
        self.slo = Counter("sluice_slo_requests", "answered requests by whether they met their deadline",
                           ["route", "outcome"], registry=r)
        self.attainment = Gauge("sluice_slo_attainment", "share of answered requests within their "
                                "deadline", ["route"], registry=r)
        self.latency = Histogram("sluice_request_latency_seconds", "request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("sluice_queue_depth", "LLM calls waiting in the engine's admission "
                                 "queue", registry=r)
        self.engine_running = Gauge("sluice_engine_running_calls", "LLM calls running in vLLM", registry=r)
        self.inflight = Gauge("sluice_inflight_requests", "requests admitted and not finished", registry=r)
        self.engine_up = Gauge("sluice_engine_up", "1 while the engine is alive", registry=r)
        self.stage_latency = Histogram("sluice_stage_latency_seconds", "LLM call latency (queued + "
                                       "run) by stage kind", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("sluice_prompt_tokens", "prompt tokens by stage kind", ["stage"],
                                     registry=r)
        self.cached_tokens = Counter("sluice_prefix_cache_hit_tokens", "prompt tokens served from the "
                                     "prefix cache, by stage kind", ["stage"], registry=r)
        self.replica_calls = Counter("sluice_replica_calls", "LLM calls by the engine replica that "
                                     "ran them (with --replicas)", ["replica"], registry=r)
        self.replica_cached = Counter("sluice_replica_prefix_cache_hit_tokens", "prompt tokens "
                                      "served from a replica's prefix cache", ["replica"], registry=r)
        self._last_trace = None
        self._slo_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])   # route -> met, all

    def answered(self, route: str, seconds: float, slo_s: float | None) -> None:
        self.latency.labels(route).observe(seconds)
        if slo_s is None:
            return
        met = seconds <= slo_s
        self.slo.labels(route, "met" if met else "missed").inc()
        counts = self._slo_counts[route]
        counts[0] += met
        counts[1] += 1
        self.attainment.labels(route).set(counts[0] / counts[1])

    def render(self, engine, inflight: int) -> bytes:
        """The exposition text, after reading the engine's queue and its new call traces."""
        health = engine.health()
        self.engine_up.set(1 if health.ok else 0)
        self.queue_depth.set(health.waiting)
        self.engine_running.set(health.running)
        self.inflight.set(inflight)
        for t in self._new_traces(engine.traces):
            self.stage_latency.labels(t.kind).observe(t.queued_s + t.run_s)
            self.prompt_tokens.labels(t.kind).inc(t.prompt_tokens)
            self.cached_tokens.labels(t.kind).inc(t.cached_tokens)
            if t.replica is not None:
                self.replica_calls.labels(t.replica).inc()
                self.replica_cached.labels(t.replica).inc(t.cached_tokens)
        return generate_latest(self.registry)

    def _new_traces(self, traces) -> list:
        """The traces added since the last scrape (the engine keeps a bounded window of them)."""
        new = list(itertools.takewhile(lambda t: t is not self._last_trace, reversed(traces)))
        if traces:
            self._last_trace = traces[-1]
        return new
