"""Serving benchmark: `sluice serve` against vLLM's own OpenAI server, same tiny model, same
open-loop Poisson arrivals, on loopback only.

Both servers run side by side, each in a fresh process, and take turns: per server its capacity
(completions per second with every request sent at once), then at each load (a multiple of
vLLM's capacity, the baseline's; sluice's own without vLLM) vLLM's run and sluice's back to back
on the same arrival times, so a machine shared with other work weighs on both alike (the load
average is printed per run), `--requests` per load, every request a completion with a deadline (`slo_ms`,
sent to sluice; vLLM has no deadline field); then, for sluice, the same loads with
`--sql-share` of the requests Text-to-SQL questions on a DuckDB shop database. Reported per load: goodput (responses within their
deadline per second), P50/P95/P99 latency of answered requests, the share refused with 429,
5xx count and requests without exactly one response (goal: none), and the goodput ratio. With
`--soak S`: sluice at 80% load for S seconds, resident memory at the start and the end.

    python benchmarks/bench_serve.py                 # about 10 minutes on 2 cores
    python benchmarks/bench_serve.py --soak 600      # plus a 10-minute soak
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from sluice.engine.testing import build_tiny_model
from sluice.serving.testing import free_port, wait_healthy
from sluice.sql_agent.testing import make_shop_db

MAX_MODEL_LEN, KV_TOKENS, BLOCK = 2048, 65536, 32
QUESTIONS = ["how many orders were placed", "which customers spent the most",
             "average price of products", "orders per month"]


@dataclass
class Result:
    kind: str
    status: int | None           # None: no response (a transport error)
    latency_s: float
    deadline_s: float


def start(command: list[str], base: str, log: Path, startup_s: float = 600) -> subprocess.Popen:
    proc = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_healthy(proc, base, log, startup_s)
    except (RuntimeError, TimeoutError) as e:
        proc.kill()
        sys.exit(str(e))
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def completion_body(rng, args, slo_s: float | None) -> dict:
    words = " ".join(rng.choice(["data", "row", "text", "model", "filter", "score"])
                     for _ in range(args.prompt_words))
    body = {"model": "tiny", "prompt": words, "max_tokens": args.max_tokens, "ignore_eos": True,
            "temperature": 0}
    if slo_s is not None:
        body["slo_ms"] = slo_s * 1000
    return body


async def one(client, kind: str, body: dict, deadline_s: float) -> Result:
    path = "/v1/sql/ask" if kind == "sql" else "/v1/completions"
    start_t = time.monotonic()
    try:
        r = await client.post(path, json=body, timeout=deadline_s * 4 + 30)
        status = r.status_code
    except httpx.TransportError:
        status = None
    return Result(kind, status, time.monotonic() - start_t, deadline_s)


async def capacity(base: str, args, n: int = 48) -> float:
    """Completions per second with `n` sent at once (no deadline)."""
    rng = random.Random(0)
    async with httpx.AsyncClient(base_url=base) as client:
        await one(client, "completion", completion_body(rng, args, None), 600)     # warm-up
        t = time.monotonic()
        results = await asyncio.gather(*[one(client, "completion",
                                             completion_body(rng, args, None), 600)
                                         for _ in range(n)])
    assert all(r.status == 200 for r in results), [r.status for r in results]
    return n / (time.monotonic() - t)


async def load(base: str, rate: float, args, slo_s: float, sql_slo_s: float, sluice: bool,
               seed: int) -> tuple[list[Result], float]:
    """Open loop: `args.requests` arrivals at `rate`/s; every result, and the wall time."""
    rng, arrivals = random.Random(seed), random.Random(seed + 1)
    tasks = []
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=1000)) as client:
        t0 = time.monotonic()
        for i in range(args.requests):
            if sluice and rng.random() < args.sql_share:
                body = {"database": "shop", "question": rng.choice(QUESTIONS),
                        "slo_ms": sql_slo_s * 1000}
                tasks.append(asyncio.create_task(one(client, "sql", body, sql_slo_s)))
            else:
                tasks.append(asyncio.create_task(one(
                    client, "completion", completion_body(rng, args, slo_s if sluice else None),
                    slo_s)))
            await asyncio.sleep(arrivals.expovariate(rate))
        results = await asyncio.gather(*tasks)
    return results, time.monotonic() - t0


def summary(results: list[Result], wall_s: float) -> dict:
    answered = [r for r in results if r.status == 200]
    good = [r for r in answered if r.latency_s <= r.deadline_s]
    lat = sorted(r.latency_s for r in answered)
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
    return dict(requests=len(results), goodput=len(good) / wall_s,
                attainment=len(good) / len(results), p50=pct(0.5), p95=pct(0.95), p99=pct(0.99),
                refused=sum(r.status == 429 for r in results) / len(results),
                errors_5xx=sum(r.status is not None and r.status >= 500 for r in results),
                no_response=sum(r.status is None for r in results), load1=os.getloadavg()[0])


def serve_config(root: Path, args) -> Path:
    make_shop_db(root / "shop.duckdb", customers=50, products=20, orders=200)
    path = root / "serve.yaml"
    path.write_text(f"""\
model: {{path: tiny, name: tiny}}
engine: {{dtype: float32, max_model_len: {MAX_MODEL_LEN}, kv_cache_tokens: {KV_TOKENS},
         load_format: dummy, enforce_eager: true}}
schedule: {{policy: urgency, max_inflight_seqs: {args.inflight}}}
databases: {{shop: shop.duckdb}}
{"limits: {max_queue: %d}" % args.max_queue if args.max_queue else ""}
text2sql: {{candidates: 2, revisions: 1, unit_tests: 2, max_tokens: 24, schema_selection: false,
           cache_dir: cache}}
replicas: {{count: {args.replicas}}}
""")
    return path


async def measure(base: str, args, rates: list[float], slo_s: float, sluice: bool) -> dict:
    out = {}
    for i, rate in enumerate(rates):
        results, wall = await load(base, rate, args, slo_s, args.sql_slo_scale * slo_s, sluice,
                                   seed=1000 + i)
        out[rate] = summary(results, wall)
    return out


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else f"{a:.2f}/s against none"


def print_table(name: str, table: dict, loads: list[float]) -> None:
    print(f"\n{name}")
    print("load  rate/s  goodput/s  attained  P50 s  P95 s  P99 s  429    5xx  no reply  loadavg")
    for load_x, (rate, r) in zip(loads, table.items()):
        print(f"{load_x:4.1f}x {rate:6.2f}  {r['goodput']:9.2f}  {100 * r['attainment']:7.0f}%"
              f"  {r['p50']:5.2f}  {r['p95']:5.2f}  {r['p99']:5.2f}  {100 * r['refused']:4.0f}%"
              f"  {r['errors_5xx']:4d}  {r['no_response']:4d}  {r['load1']:7.1f}")


async def soak(base: str, proc: subprocess.Popen, args, rate: float, slo_s: float) -> dict:
    """80% load for `args.soak` seconds: the server's resident memory (with its children)."""
    def rss() -> int:
        p = psutil.Process(proc.pid)
        return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])

    before, t0, results = rss(), time.monotonic(), []
    args_soak = argparse.Namespace(**{**vars(args), "requests": max(int(rate * 30), 1)})
    while time.monotonic() - t0 < args.soak:
        batch, _ = await load(base, rate, args_soak, slo_s, args.sql_slo_scale * slo_s, True,
                              seed=int(time.monotonic()))
        results += batch
    after = rss()
    s = summary(results, time.monotonic() - t0)
    print(f"\nsoak: {args.soak:.0f} s at 80% load, {len(results)} requests: resident memory "
          f"{before / 2**20:.0f} -> {after / 2**20:.0f} MiB ({100 * (after / before - 1):+.1f}%), "
          f"5xx {s['errors_5xx']}, no reply {s['no_response']}")
    return dict(rss_before=before, rss_after=after, **s)


def vllm_command(model: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", "tiny", "--load-format", "dummy", "--dtype", "float32",
            "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN), "--block-size", str(BLOCK),
            "--enable-prefix-caching", "--num-gpu-blocks-override", str(KV_TOKENS // BLOCK + 1),
            "--gpu-memory-utilization", "0.3", "--port", str(port)]


async def reference(base: str, args) -> tuple[float, float]:
    """A server's capacity and one request's latency alone (median of 5)."""
    cap = await capacity(base, args)
    async with httpx.AsyncClient(base_url=base) as client:
        alone = statistics.median([(await one(client, "completion", completion_body(
            random.Random(i), args, None), 600)).latency_s for i in range(5)])
    return cap, alone


def cpu_s(proc: subprocess.Popen) -> float:
    """CPU seconds a server and its children have used."""
    p = psutil.Process(proc.pid)
    return sum(sum(q.cpu_times()[:2]) for q in [p, *p.children(recursive=True)])


async def main(args):
    """Both servers up side by side (with --vllm): vLLM's capacity and one request's latency
    alone set the loads (multiples of that capacity) and the deadline (`--slo-scale` x that
    latency); at each load vLLM's run then sluice's, back to back on the same arrivals, so both
    meet the machine as it is then (the idle one's CPU use is reported). Then, vLLM stopped,
    sluice's mixed runs and the soak. Without vLLM, sluice's own figures set the loads."""
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-serve-"))
    model = build_tiny_model(root / "tiny", layers=args.layers, hidden=args.hidden)
    results = {"args": vars(args)}
    servers: dict[str, tuple[subprocess.Popen, str]] = {}

    def up(name: str, command) -> None:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        servers[name] = start(command(port, base), base, root / f"{name}.log"), base

    try:
        if args.vllm:
            up("vllm", lambda port, base: vllm_command(model, port))
        up("sluice", lambda port, base: [sys.executable, "-m", "sluice.serving.cli", "serve",
                                         "--config", str(serve_config(root, args)), "--port",
                                         str(port)])
        alone = {}
        for name, (_, base) in servers.items():
            results[f"{name}_capacity"], alone[name] = await reference(base, args)
            print(f"{name}: capacity {results[f'{name}_capacity']:.2f}/s, one request alone "
                  f"{alone[name]:.3f} s", flush=True)
        who = "vllm" if args.vllm else "sluice"
        slo_s = args.slo_scale * alone[who]
        rates = [round(x * results[f"{who}_capacity"], 3) for x in args.loads]
        results["reference"] = dict(server=who, slo_s=slo_s)
        print(f"tiny model {args.layers} layers x {args.hidden}; completions of "
              f"{args.prompt_words} words -> {args.max_tokens} tokens; loads are multiples of "
              f"{who}'s capacity; deadline {slo_s:.2f} s ({args.slo_scale}x its request alone), "
              f"Text-to-SQL {args.sql_slo_scale}x that; {args.requests} requests per load",
              flush=True)
        completions_only = argparse.Namespace(**{**vars(args), "sql_share": 0.0})
        idle_cpu = {name: 0.0 for name in servers}
        for i, rate in enumerate(rates):
            for name, (_, base) in servers.items():
                others = {o: cpu_s(p) for o, (p, _) in servers.items() if o != name}
                out, wall = await load(base, rate, completions_only, slo_s,
                                       args.sql_slo_scale * slo_s, name == "sluice", seed=1000 + i)
                results.setdefault(name, {})[rate] = summary(out, wall)
                for o, before in others.items():
                    idle_cpu[o] += cpu_s(servers[o][0]) - before
        results["idle_cpu_s"] = idle_cpu
        if args.vllm:
            print_table(f"vllm serve (completions; CPU while idle {idle_cpu['vllm']:.1f} s)",
                        results["vllm"], args.loads)
            proc, _ = servers.pop("vllm")
            stop(proc)
        print_table(f"sluice serve (completions; CPU while idle {idle_cpu['sluice']:.1f} s)",
                    results["sluice"], args.loads)
        proc, base = servers["sluice"]
        if args.sql_share:
            results["sluice_mixed"] = await measure(base, args, rates, slo_s, sluice=True)
            print_table(f"sluice serve ({100 * args.sql_share:.0f}% Text-to-SQL questions, "
                        "the rest completions)", results["sluice_mixed"], args.loads)
        if args.soak:
            results["soak"] = await soak(base, proc, args, 0.8 * results["sluice_capacity"], slo_s)
    finally:
        for proc, _ in servers.values():
            stop(proc)
    if args.vllm:
        print("\ngoodput sluice / vLLM (completions): " + ", ".join(
            f"{x:g}x load " + ratio(results["sluice"][r]["goodput"], results["vllm"][r]["goodput"])
            for x, r in zip(args.loads, rates)))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0],
                        help="arrival rates as multiples of vLLM's measured capacity (sluice's "
                             "with --no-vllm)")
    parser.add_argument("--requests", type=int, default=120, help="requests per load")
    parser.add_argument("--slo-scale", type=float, default=4.0,
                        help="a completion's deadline: this x one request's latency alone")
    parser.add_argument("--sql-slo-scale", type=float, default=8.0,
                        help="a Text-to-SQL question's deadline: this x a completion's")
    parser.add_argument("--sql-share", type=float, default=0.1)
    parser.add_argument("--prompt-words", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--inflight", default="auto",
                        help="sluice's in-flight bound (schedule.max_inflight_seqs; default auto: "
                             "vLLM's max_num_seqs)")
    parser.add_argument("--max-queue", type=int,
                        help="sluice's limits.max_queue (default: the server's, 2 x its call slots)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--no-vllm", dest="vllm", action="store_false",
                        help="skip the vLLM server comparison")
    parser.add_argument("--soak", type=float, default=0, help="seconds of soak at 80%% load")
    parser.add_argument("--out", help="write the figures as JSON here")
    asyncio.run(main(parser.parse_args()))
