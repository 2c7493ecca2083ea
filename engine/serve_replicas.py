"""Engine replicas as a Ray Serve deployment, routed by sluice's dispatcher.

    async with ServeReplicas(config, replicas=2, dispatch="balanced", alpha=0.5) as engines:
        completion = await engines.call(prompt, params, workflow=wf, stage="ir")

The deployment's replicas are `OnlineEngine`s (`EngineDeployment`, the body `EngineReplica` of
engine/replicas.py); its request router is `DispatchRouter` (engine/serve_router.py), so Ray
Serve places every call where sluice's workload-balanced dispatcher says. The caller's side
(tokenizing, the deadline split, the estimator, retries on a dead replica, health) is
`ReplicaClient`'s, the same as for plain Ray actors. Serve's part: it starts the replicas on the
cluster (`ray_address`) or a local Ray, health-checks them every HEALTH_CHECK_S (a replica whose
engine died fails the check and is replaced by a new one) and drops a replica whose actor died;
a call that finds its replica dead before its first chunk is sent again, elsewhere.

No HTTP proxy of Serve's runs: the HTTP API stays in the `sluice serve` process (its admission
gate, metrics and drain are per process) and reaches the replicas through a deployment handle.
Needs the `serve` extra (`ray[serve]`).
"""

from __future__ import annotations

import asyncio
import os
import socket

from .config import EngineConfig
from .online import EngineDead, Schedule
from .replicas import EngineReplica, ReplicaClient, Route, cpu_shares, init_ray

HEALTH_CHECK_S = 2.0         # Serve asks each replica's engine this often
ROUTING_STATS_S = 1.0        # and passes its engine's state to the router this often
MAX_ONGOING = 10_000         # per replica; the server's gate bounds the queue, not Serve
DEPLOYMENT = "engine"


def check_serve_installed() -> None:
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        raise EngineDead("replicas: Ray Serve is not installed; pip install 'sluice[serve]'") from None


class EngineDeployment(EngineReplica):
    """One engine replica of the Serve deployment, named by its Serve replica id. On a local Ray
    (`cpus` given) its vLLM threads are bound to its share of those cores, by replica rank."""

    async def __init__(self, config: EngineConfig, schedule: Schedule | None,
                       cpus: list[int] | None = None):
        from ray import serve

        context = serve.get_replica_context()
        if cpus:
            shares = cpu_shares(context.world_size, cpus)
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = shares[context.rank.local_rank % len(shares)]
        super().__init__(config, schedule, name=context.replica_id.unique_id)
        await self.start()

    async def info(self) -> dict:
        return self.describe()

    def check_health(self) -> None:
        """Serve's health check: a replica whose engine died is replaced."""
        health = self.engine.health()
        if not health.ok:
            raise EngineDead(f"replica {self.name}: {health.error or 'engine stopped'}")

    def record_routing_stats(self) -> dict:
        health = self.engine.health()
        return {"engine_ok": health.ok, "waiting": health.waiting, "running": health.running}

    async def __del__(self):
        await self.close()


class ServeReplicas(ReplicaClient):
    """`replicas` online engines as a Ray Serve deployment whose request router is sluice's
    dispatcher (`dispatch`: balanced at `alpha`, or round-robin). `num_cpus`/`num_gpus` per
    replica. Uses the running Ray session, or starts a local one (or joins `ray_address`)."""

    def __init__(self, config: EngineConfig, schedule: Schedule | None = None, *,
                 replicas: int = 2, dispatch: str = "balanced", alpha: float = 0.5,
                 num_cpus: float = 1, num_gpus: float = 0, ray_address: str | None = None):
        super().__init__(config, schedule, replicas)
        self.dispatch, self.alpha = dispatch, alpha
        self.num_cpus, self.num_gpus, self.ray_address = num_cpus, num_gpus, ray_address
        self.app = f"sluice-{socket.gethostname()}-{os.getpid()}"
        self._handle = None
        self._running, self._error = 0, None
        self._started_ray = False

    async def start(self) -> None:
        check_serve_installed()
        self.config.check()
        self._started_ray = init_ray(self.ray_address)
        from ray import serve
        from ray.serve.config import RequestRouterConfig

        from .serve_router import shared_state

        state = shared_state(self.app)
        state.estimator = self.estimator
        local = not self.ray_address and self.num_gpus == 0
        router = RequestRouterConfig(
            request_router_class="sluice.engine.serve_router.DispatchRouter",
            request_router_kwargs=dict(dispatch=self.dispatch, alpha=self.alpha,
                                       block_size=self.config.block_size,
                                       max_load=self.schedule.seq_bound(self.config.max_num_seqs),
                                       state_key=self.app),
            request_routing_stats_period_s=ROUTING_STATS_S)
        deployment = serve.deployment(EngineDeployment, name=DEPLOYMENT).options(
            num_replicas=self.replicas, max_ongoing_requests=MAX_ONGOING,
            ray_actor_options=dict(num_cpus=self.num_cpus, num_gpus=self.num_gpus),
            health_check_period_s=HEALTH_CHECK_S, request_router_config=router)
        serve.start(proxy_location="Disabled")
        app = deployment.bind(self.config, self.schedule,
                              sorted(os.sched_getaffinity(0)) if local else None)
        self._handle = await asyncio.to_thread(serve.run, app, name=self.app, route_prefix=None)
        info = await self._handle.info.remote()
        self.kv_cache_tokens, self.max_num_seqs = info["kv_cache_tokens"], info["max_num_seqs"]
        state.capacity_blocks = self.kv_cache_tokens // self.config.block_size
        self._load_tokenizer()
        self._running = self.replicas
        self._watch = asyncio.create_task(self._watch_status())

    async def _watch_status(self) -> None:
        """Serve's view of the deployment, every second: replicas running, and why not."""
        from ray import serve

        while True:
            await asyncio.sleep(1.0)
            try:
                status = await asyncio.to_thread(serve.status)
                deployment = status.applications[self.app].deployments[DEPLOYMENT]
            except Exception as e:            # the controller is gone: nothing runs
                self._running, self._error = 0, f"replicas: Ray Serve is unreachable ({e})"
                continue
            self._running = deployment.replica_states.get("RUNNING", 0)
            self._error = None if self._running else (
                f"replicas: none of {self.replicas} is running (Serve: {deployment.status}"
                f"{': ' + deployment.message if deployment.message else ''})")

    async def close(self) -> None:
        """Delete the deployment (each replica closes its engine), then stop Serve and Ray if
        this started them."""
        from ray import serve

        from .serve_router import forget_state

        if getattr(self, "_watch", None) is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._handle is not None:
            self._handle = None
            await asyncio.to_thread(serve.delete, self.app)
        forget_state(self.app)
        if self._started_ray:
            import ray

            await asyncio.to_thread(serve.shutdown)
            ray.shutdown()
            self._started_ray = False

    # --- calls -----------------------------------------------------------------------------

    def _target(self, route: Route) -> None:
        if self._handle is None:
            raise EngineDead("replicas: not started; use `async with ServeReplicas(config)`")
        return None                           # the router places the call

    async def _send(self, target, route, prompt, params, deadline, whole):
        if whole:
            response = self._handle.call.remote(prompt, params, deadline, route=route)
            try:
                completion, trace = await response
            except asyncio.CancelledError:
                response.cancel()               # the replica aborts it in vLLM, freeing its KV
                raise
            yield trace
            yield completion
            return
        chunks = self._handle.options(stream=True).stream.remote(prompt, params, deadline,
                                                                 route=route)
        try:
            async for item in chunks:
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            chunks.cancel()
            raise

    def _lost(self, target, cause: BaseException, attempt: int) -> str:
        message = str(cause) if isinstance(cause, EngineDead) else (
            f"replicas: a replica stopped unexpectedly ({type(cause).__name__}: {cause})")
        if attempt + 1 >= self.replicas + 1:    # tried each replica, and a replacement
            raise EngineDead(message)
        return message

    def live_replicas(self) -> int:
        return self._running

    def errors(self) -> str | None:
        return self._error
