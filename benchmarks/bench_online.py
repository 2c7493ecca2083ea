"""Online scheduling benchmark: Text-to-SQL workflows with deadlines on one vLLM engine, four
schedules side by side in one run.

Workload: CHESS-shaped workflows (../shared/notes/online.md), token lengths scaled by
`--token-scale` (default 1/10) so the tiny CPU model runs them, output lengths fixed with
`ignore_eos`. Per question: 4 retriever orchestrator calls and a keyword extraction, 2 parallel
candidates, 0-10 sequential revisions, 3 unit-tester orchestrator calls, a unit-test generation
and 1-10 parallel evaluations. Candidate and revision prompts open with the question's database
schema (6 databases), so questions on one database share a prefix. Each workflow declares its
plan with a guess of 5 revisions and corrects it once the candidates are in.

Arrivals are Poisson at several rates (`--loads`: workflows arriving per base-SLO time); SLO = scale x the standalone latency of one standard
15-call workflow measured on this engine. Schedules, each run on the same engine with the
prefix cache reset:

  (1) vllm-fcfs      plain vLLM: every call submitted when ready, vLLM's FCFS
  (2) vllm-priority  vLLM's priority policy, priority = workflow arrival (program-level FCFS)
  (3) sluice-edf     sluice's admission queue, earliest workflow deadline first
  (4) sluice-urgency sluice's admission queue, urgency (estimated time minus stage slack)

Every schedule is run at every scale, the four interleaved with the order rotated per scale, so
load from other jobs on the machine hits them alike. Printed: SLO attainment per scale,
the smallest scale reaching 95% and its ratio to (1), throughput, P50/P95 latency, prefix-cache
hits, the estimator's error; then the offline filling run (urgency at the middle load and scale,
alone and with a 2,000-prompt offline batch below it); an HTML plot with --plot.

    python benchmarks/bench_online.py            # about 10 minutes on 2 cores
    python benchmarks/bench_online.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass

from sluice.engine import (EDF, FCFS, Balanced, EngineConfig, Observation, OnlineEngine,
                           ReplicaSet, RoundRobin, SamplingParams, Schedule, SimWorkflow, Stage,
                           StageTimeEstimator, Urgency, Workflow, simulate, tune_alpha,
                           workflows_from_traces)
from sluice.engine.simulator import call_time_of, fit_traces
from sluice.engine.testing import build_tiny_model
from sluice.engine.trace_file import write_traces

# (kind, prompt tokens, output tokens) at full scale, from the CHESS traces
SHAPES = {"ir": (306, 7), "extract": (679, 49), "candidate": (10_800, 696), "revise": (6_900, 156),
          "ut": (275, 5), "unit_test": (1_169, 104), "evaluate": (1_142, 30)}
SCHEMA_SHARE = 0.75          # of a revision prompt: the database schema (candidates add more)
DATABASES = 6
ALL_SCALES = (1.5, 2.0, 3.0, 4.0)
OFFLINE_PARAMS = SamplingParams(max_tokens=16, ignore_eos=True)


@dataclass
class Question:
    revisions: int
    evaluations: int
    database: int
    seed: int


def standard() -> Question:
    """The base-SLO workflow: 4 IR, 1 extract, 1 candidate stage, 4 revisions, 3 UT, 1 test, 1 eval."""
    return Question(revisions=4, evaluations=1, database=0, seed=0)


class Workload:
    def __init__(self, tokenizer, token_scale: float, seed: int):
        self.tokenizer = tokenizer
        self.scale = token_scale
        self.vocab = [i for t, i in tokenizer.get_vocab().items() if t.startswith("Ġ") and t[1:].isalpha()]
        rng = random.Random(seed)
        self.schema_tokens = round(self.lengths("revise")[0] * SCHEMA_SHARE)
        self.schemas = [self.text(rng, self.schema_tokens) for _ in range(DATABASES)]

    def text(self, rng, tokens: int) -> str:
        return self.tokenizer.decode([rng.choice(self.vocab) for _ in range(max(tokens, 1))])

    def lengths(self, kind: str) -> tuple[int, int]:
        prompt, output = SHAPES[kind]
        return max(round(prompt * self.scale), 4), max(round(output * self.scale), 1)

    def prompt(self, rng, kind: str, q: Question) -> str:
        tokens, _ = self.lengths(kind)
        if kind in ("candidate", "revise"):
            schema = self.schemas[q.database]
            return schema + self.text(rng, tokens - self.schema_tokens)
        return self.text(rng, tokens)

    def params(self, kind: str) -> SamplingParams:
        return SamplingParams(max_tokens=self.lengths(kind)[1], ignore_eos=True)

    def stage(self, name: str, kind: str, fanout: int = 1) -> Stage:
        prompt, output = self.lengths(kind)
        return Stage(name, kind, fanout, prompt, output)

    def plan(self, q: Question, revisions: int) -> list[Stage]:
        s = self.stage
        return ([s("ir-1", "ir"), s("extract", "extract"), s("ir-2", "ir"), s("ir-3", "ir"),
                 s("ir-4", "ir"), s("candidates", "candidate", 2)]
                + [s(f"revise-{r}", "revise") for r in range(1, revisions + 1)]
                + [s("ut-1", "ut"), s("unit-test", "unit_test"), s("ut-2", "ut"),
                   s("evaluate", "evaluate", q.evaluations), s("ut-3", "ut")])

    async def run(self, engine: OnlineEngine, q: Question, slo_s: float) -> float:
        """Run one question's workflow; its end-to-end latency in seconds."""
        rng = random.Random(q.seed)
        wf = Workflow(self.plan(q, revisions=5), slo_s, late="run")
        start = time.monotonic()

        async def call(name: str, n: int = 1):
            kind = wf.plan.get(name).kind
            await asyncio.gather(*[engine.call(self.prompt(rng, kind, q), self.params(kind),
                                               workflow=wf, stage=name) for _ in range(n)])

        for name in ("ir-1", "extract", "ir-2", "ir-3", "ir-4"):
            await call(name)
        await call("candidates", 2)
        for r in range(q.revisions + 1, 6):                     # the guess of 5 was too many
            wf.plan.remove(f"revise-{r}")
        for r in range(6, q.revisions + 1):                     # ...or too few
            wf.plan.add(self.stage(f"revise-{r}", "revise"), after=f"revise-{r - 1}")
        for r in range(1, q.revisions + 1):
            await call(f"revise-{r}")
        for name in ("ut-1", "unit-test", "ut-2"):
            await call(name)
        await call("evaluate", q.evaluations)
        await call("ut-3")
        return time.monotonic() - start


SCHEDULES = {
    "vllm-fcfs": lambda k: Schedule(policy=FCFS(), max_inflight_seqs=None),
    "vllm-priority": lambda k: Schedule(policy=FCFS(), max_inflight_seqs=None, vllm_priority="workflow"),
    "sluice-edf": lambda k: Schedule(policy=EDF(), max_inflight_seqs=k),
    "sluice-urgency": lambda k: Schedule(policy=Urgency(), max_inflight_seqs=k),
}


async def measure(engine, workload, questions, rate, slo_s, schedule, profile, seed,
                  offline_prompts=()):
    """One run: Poisson arrivals of `questions` at `rate`/s (and, if given, an offline batch
    submitted at the start); latencies and engine figures while the workflows ran."""
    engine.schedule = schedule
    engine.estimator = StageTimeEstimator(profile)
    engine.traces.clear()
    await engine.reset_prefix_cache()
    rng = random.Random(seed)
    start = time.monotonic()
    batch = asyncio.create_task(engine.generate_offline(list(offline_prompts), OFFLINE_PARAMS))
    tasks = []
    for q in questions:
        tasks.append(asyncio.create_task(workload.run(engine, q, slo_s)))
        await asyncio.sleep(rng.expovariate(rate))
    latencies = await asyncio.gather(*tasks)
    end = time.monotonic()
    batch.cancel()
    await asyncio.gather(batch, return_exceptions=True)
    online = [t for t in engine.traces if not t.offline]
    offline_done = [t for t in engine.traces if t.offline and t.admitted_at + t.run_s <= end]
    prompt = sum(t.prompt_tokens for t in online)
    errors = {k: engine.estimator.relative_error(k, skip=50) for k in SHAPES}
    return dict(latencies=latencies, wall_s=end - start, throughput=len(questions) / (end - start),
                cache_hit=sum(t.cached_tokens for t in online) / prompt,
                offline_tokens_per_s=sum(t.prompt_tokens + t.output_tokens
                                         for t in offline_done) / (end - start),
                estimator_error={k: v for k, v in errors.items() if v is not None})


def attainment(latencies, slo_s):
    return sum(lat <= slo_s for lat in latencies) / len(latencies)


def smallest_scale(by_scale: dict[float, float], target=0.95):
    ok = [s for s, a in sorted(by_scale.items()) if a >= target]
    return ok[0] if ok else None


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def tiny_config(args) -> EngineConfig:
    model = build_tiny_model(tempfile.mkdtemp(prefix="sluice-bench-online-"), layers=args.layers,
                             hidden=args.hidden)
    return EngineConfig(model=str(model), load_format="dummy", enforce_eager=True,
                        dtype="float32", max_model_len=2048, kv_cache_tokens=args.kv_cache_tokens)


def random_questions(rng, n) -> list[Question]:
    return [Question(rng.randint(0, 10), rng.randint(1, 10), rng.randrange(DATABASES),
                     rng.randrange(10**9)) for _ in range(n)]


async def profile_standard(engine, workload) -> tuple[float, dict]:
    """One warm-up, then the median of 3 standalone standard workflows (the base SLO), and the
    calls they made as the estimator's profile."""
    await workload.run(engine, standard(), 1e9)
    seen = len(await traces_of(engine))
    base = statistics.median([await workload.run(engine, standard(), 1e9) for _ in range(3)])
    traces = (await traces_of(engine))[seen:]
    profile = {k: [Observation(t.prompt_tokens, t.output_tokens, t.run_s, t.cached_tokens, t.load)
                   for t in traces if t.kind == k] for k in SHAPES}
    return base, profile


async def traces_of(engine) -> list:
    return list(engine.traces)


async def main(args):
    if args.replicas > 1:
        return await replicas_main(args)
    config = tiny_config(args)
    rng = random.Random(args.seed)
    async with OnlineEngine(config) as engine:
        workload = Workload(engine.tokenizer, args.token_scale, args.seed)
        # profile run: standalone standard workflows, also the base SLO
        engine.schedule = Schedule(policy=FCFS(), max_inflight_seqs=None)
        base, profile = await profile_standard(engine, workload)
        print(f"model: {args.layers} layers x {args.hidden}; token scale {args.token_scale}; "
              f"{args.workflows} workflows per run; sluice in-flight bound {args.inflight} sequences; "
              f"KV cache {engine.kv_cache_tokens} tokens")
        print(f"standalone standard workflow (15 calls): {base:.3f} s (median of 3) = base SLO")
        results = {"base_slo_s": base, "args": vars(args), "rates": {}}
        if args.simulate:
            results["simulated"] = await simulated(engine, workload, rng, base, profile, args)
            args.loads, args.fill = [], False
        for load in args.loads:
            rate = round(load / base, 3)
            questions = random_questions(rng, args.workflows)
            arrivals = rng.randrange(10**9)
            by_run = {name: {} for name in SCHEDULES}
            for i, scale in enumerate(args.scales):          # schedules interleaved, order rotated
                names = list(SCHEDULES)[i % 4:] + list(SCHEDULES)[:i % 4]
                for name in names:
                    by_run[name][scale] = await measure(engine, workload, questions, rate,
                                                        base * scale,
                                                        SCHEDULES[name](args.inflight), profile,
                                                        arrivals)
            runs = {name: summarize(per_scale, base) for name, per_scale in by_run.items()}
            report(rate, load, runs, args.scales)
            results["rates"][rate] = runs
        if args.fill:
            results["fill"] = await fill(engine, workload, rng, base, args, profile)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if args.plot:
        write_plot(args.plot, results, args.scales)


SIM_SCHEDULES = {"vllm (unbounded, FCFS)": (FCFS, None), "sluice-edf": (EDF, "k"),
                 "sluice-urgency": (Urgency, "k")}


async def simulated(engine, workload, rng, base, profile, args):
    """The comparison replayed on the simulator: call times from the estimator fitted on one
    real loaded run (urgency, middle load), many more workflows, no machine noise. With no
    admission bound every call runs at once, so vLLM's FCFS and priority orders coincide."""
    load = args.loads[len(args.loads) // 2]
    questions = random_questions(rng, args.workflows)
    await measure(engine, workload, questions, load / base, base * 3,
                  SCHEDULES["sluice-urgency"](args.inflight), profile, rng.randrange(10**9))
    return sim_sweep(workload, engine.estimator, profile, rng, load, args)


def sim_sweep(workload, model, profile, rng, fitted_at, args):
    """Attainment per schedule, load and scale on the simulator, call times from `model`."""
    call_time = lambda kind, p, o, running, cached: model.predict(kind, p, o, cached, running)
    plan = lambda q: tuple(workload.plan(q, q.revisions))
    [sim_base] = simulate([SimWorkflow(0.0, 1e9, plan(standard()))], FCFS(), call_time,
                          max_inflight_seqs=1_000_000)
    print(f"\nsimulated: call times fitted on a real run at load {fitted_at}; standalone standard "
          f"workflow {sim_base:.3f} s; {args.sim_workflows} workflows per run")
    out = {}
    for load in args.loads:
        arrivals, t = [], 0.0
        for _ in range(args.sim_workflows):
            arrivals.append(t)
            t += rng.expovariate(load / sim_base)
        qs = [Question(rng.randint(0, 10), rng.randint(1, 10), 0, 0) for _ in arrivals]
        table = {}
        for name, (policy, bound) in SIM_SCHEDULES.items():
            table[name] = {}
            for scale in args.scales:
                specs = [SimWorkflow(a, scale * sim_base, plan(q)) for a, q in zip(arrivals, qs)]
                lat = simulate(specs, policy(), call_time, estimator=StageTimeEstimator(profile),
                               max_inflight_seqs=args.inflight if bound else 1_000_000)
                table[name][scale] = attainment(lat, scale * sim_base)
        reference = smallest_scale(table["vllm (unbounded, FCFS)"])
        print(f"load {load}:  " + " ".join(f"{sc:>5}x" for sc in args.scales) + "  95% at  ratio")
        for name, by_scale in table.items():
            smallest = smallest_scale(by_scale)
            ratio = f"{reference / smallest:.2f}x" if smallest and reference else "n/a"
            print(f"  {name:22} " + " ".join(f"{100 * a:5.0f}%" for a in by_scale.values())
                  + f"  {str(smallest) + 'x' if smallest else 'none':>6}  {ratio}")
        out[load] = table
    return out


async def measure_replicas(rs, workload, questions, rate, slo_s, rule, profile, seed):
    """One run on the replica set under dispatch `rule`: latencies and the calls' traces."""
    await rs.reset(StageTimeEstimator(profile), dispatch=rule)
    rng = random.Random(seed)
    start, tasks = time.monotonic(), []
    for q in questions:
        tasks.append(asyncio.create_task(workload.run(rs, q, slo_s)))
        await asyncio.sleep(rng.expovariate(rate))
    latencies = await asyncio.gather(*tasks)
    wall = time.monotonic() - start
    traces = list(rs.traces)
    online = [t for t in traces if not t.offline]
    return dict(latencies=latencies, wall_s=wall, throughput=len(questions) / wall, traces=traces,
                cache_hit=sum(t.cached_tokens for t in online) / sum(t.prompt_tokens for t in online),
                estimator_error={})


async def replicas_main(args):
    """Two (or more) replicas: a round-robin run at the middle load and the tightest scale is
    recorded and replayed on the simulator to tune alpha; then round robin against the workload-balanced rule at
    the tuned alpha, at every load and scale, interleaved."""
    config = tiny_config(args)
    rng = random.Random(args.seed)
    schedule = SCHEDULES["sluice-urgency"](args.inflight)
    async with ReplicaSet(config, schedule, replicas=args.replicas, dispatch=RoundRobin()) as rs:
        workload = Workload(rs.tokenizer, args.token_scale, args.seed)
        base, profile = await profile_standard(rs, workload)
        print(f"{args.replicas} replicas (Ray actors, tiny model "
              f"{args.layers} layers x {args.hidden}), urgency on each, {args.inflight} sequences "
              f"in flight per replica; token scale {args.token_scale}; {args.workflows} "
              f"workflows per run")
        print(f"standalone standard workflow: {base:.3f} s (median of 3) = base SLO")
        load, scale = args.loads[len(args.loads) // 2], args.scales[0]   # tight: misses to tell
        recorded = await measure_replicas(rs, workload, random_questions(rng, args.workflows),
                                          load / base, base * scale, RoundRobin(), profile,
                                          rng.randrange(10**9))
        setup = dict(replicas=args.replicas, block_size=config.block_size,
                     kv_cache_tokens=rs.kv_cache_tokens, max_inflight_seqs=args.inflight)
        if args.trace_out:
            n = write_traces(args.trace_out, recorded["traces"], **setup)
            print(f"recorded trace: {n} calls -> {args.trace_out} "
                  f"(replay: sluice engine tune-alpha {args.trace_out})")
        tuning = tune_alpha(workflows_from_traces(recorded["traces"]),
                            call_time_of(fit_traces(recorded["traces"])),
                            speeds=[1.0] * args.replicas, estimator=StageTimeEstimator(profile),
                            max_inflight_seqs=args.inflight, block_size=config.block_size,
                            cache_blocks=rs.kv_cache_tokens // config.block_size)
        print("alpha tuned on the simulator (recorded round-robin run at load "
              f"{load}, {scale}x): " + ", ".join(f"{a:g}: {100 * v:.0f}%"
                                                  for a, v in tuning.attainment.items())
              + f"; round robin {100 * tuning.round_robin:.0f}%; best alpha {tuning.best_alpha:g}")
        rules = {"round-robin": RoundRobin, f"balanced-{tuning.best_alpha:g}":
                 lambda: Balanced(tuning.best_alpha)}
        results = {"base_slo_s": base, "args": vars(args), "alpha": tuning.attainment,
                   "best_alpha": tuning.best_alpha, "rates": {}}
        for load in args.loads:
            rate = round(load / base, 3)
            questions, arrivals = random_questions(rng, args.workflows), rng.randrange(10**9)
            by_run = {name: {} for name in rules}
            for i, scale in enumerate(args.scales):          # rules interleaved, order rotated
                for name in list(rules)[i % 2:] + list(rules)[:i % 2]:
                    run = await measure_replicas(rs, workload, questions, rate, base * scale,
                                                 rules[name](), profile, arrivals)
                    run.pop("traces")
                    by_run[name][scale] = run
            runs = {name: summarize(per_scale, base) for name, per_scale in by_run.items()}
            report(rate, load, runs, args.scales, reference=list(rules)[0])
            results["rates"][rate] = runs
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if args.plot:
        write_plot(args.plot, results, args.scales)


def summarize(per_scale: dict, base: float) -> dict:
    runs = per_scale.values()
    errors = {}
    for r in runs:
        for kind, e in r["estimator_error"].items():
            errors.setdefault(kind, []).append(e)
    return dict(attainment={s: attainment(r["latencies"], s * base) for s, r in per_scale.items()},
                latencies=[lat for r in runs for lat in r["latencies"]],
                throughput=statistics.mean(r["throughput"] for r in runs),
                cache_hit=statistics.mean(r["cache_hit"] for r in runs),
                estimator_error={k: statistics.mean(v) for k, v in errors.items()})


async def fill(engine, workload, rng, base, args, profile):
    """Urgency at the middle load and scale, online only and with an offline batch below it."""
    load, scale = args.loads[len(args.loads) // 2], args.scales[len(args.scales) // 2]
    rate = load / base
    questions = random_questions(rng, args.workflows)
    offline = [workload.text(rng, 200) for _ in range(2000)]
    arrivals = rng.randrange(10**9)
    schedule = SCHEDULES["sluice-urgency"](args.inflight)
    alone = await measure(engine, workload, questions, rate, base * scale, schedule, profile, arrivals)
    filled = await measure(engine, workload, questions, rate, base * scale, schedule, profile,
                           arrivals, offline)
    a, b = (attainment(r["latencies"], base * scale) for r in (alone, filled))
    print(f"\nfilling (urgency, load {load}, SLO {scale}x): attainment online only {100 * a:.0f}%, "
          f"with offline batch {100 * b:.0f}%; offline throughput gained "
          f"{filled['offline_tokens_per_s']:.0f} tokens/s")
    return dict(load=load, scale=scale, alone=a, filled=b,
                offline_tokens_per_s=filled["offline_tokens_per_s"])


def report(rate, load, runs, scales, reference="vllm-fcfs"):
    print(f"\narrival rate {rate}/s (load {load}: workflows arriving per base SLO)")
    print("schedule        " + " ".join(f"{s:>5}x" for s in scales)
          + "  95%-scale  ratio  wf/s   P50 s  P95 s  cache")
    reference = smallest_scale(runs[reference]["attainment"])
    for name, r in runs.items():
        smallest = smallest_scale(r["attainment"])
        ratio = f"{reference / smallest:5.2f}x" if smallest and reference else "   n/a"
        lat = r["latencies"]
        print(f"{name:15} " + " ".join(f"{100 * r['attainment'][s]:5.0f}%" for s in scales)
              + f"  {str(smallest) + 'x' if smallest else '>' + str(max(scales)) + 'x':>9}  {ratio}"
              + f"  {r['throughput']:5.2f}  {percentile(lat, 0.5):6.2f} {percentile(lat, 0.95):6.2f}"
              + f"  {100 * r['cache_hit']:4.0f}%")
    errors = runs.get("sluice-urgency", {}).get("estimator_error")
    if errors:
        print("estimator error, calls after the 50th of a kind (urgency runs): "
              + ", ".join(f"{k} {100 * v:.0f}%" for k, v in errors.items()))


def write_plot(path, results, scales):
    """SLO attainment against scale, one line per schedule and rate, as an inline SVG."""
    names = list(next(iter(results["rates"].values())))
    colors = dict(zip(names, ["#888", "#36c", "#c93", "#c33"]))
    w, h, pad = 640, 360, 40
    x = lambda s: pad + (s - min(scales)) / (max(scales) - min(scales)) * (w - 2 * pad)
    y = lambda a: h - pad - a * (h - 2 * pad)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">',
             f'<line x1="{pad}" y1="{y(0.95)}" x2="{w - pad}" y2="{y(0.95)}" stroke="#ccc" stroke-dasharray="4"/>']
    for i, (rate, runs) in enumerate(results["rates"].items()):
        for name, r in runs.items():
            pts = " ".join(f"{x(s):.1f},{y(r['attainment'][s]):.1f}" for s in scales)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colors[name]}" '
                         f'stroke-width="2" stroke-dasharray="{"" if i == 0 else 2 + 3 * i}">'
                         f'<title>{name} at {rate}/s</title></polyline>')
    parts += [f'<text x="{x(s) - 8:.0f}" y="{h - 12}" font-size="11">{s}x</text>' for s in scales]
    parts += [f'<text x="{w - 150}" y="{20 + 14 * i}" font-size="11" fill="{c}">{n}</text>'
              for i, (n, c) in enumerate(colors.items())]
    parts.append("</svg>")
    rates = ", ".join(str(r) for r in results["rates"])
    with open(path, "w") as f:
        f.write(f"<html><body><h3>SLO attainment vs SLO scale (rates {rates}/s; solid = first rate,"
                f" dashes longer per rate)</h3>{''.join(parts)}</body></html>")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer workflows, rates and scales")
    parser.add_argument("--workflows", type=int, default=12)
    parser.add_argument("--loads", type=float, nargs="+", default=[0.6, 0.9, 1.2],
                        help="arrival rates as workflows arriving per base-SLO time (rate x base)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(ALL_SCALES))
    parser.add_argument("--inflight", type=int, default=8, help="sluice's in-flight sequence bound")
    parser.add_argument("--kv-cache-tokens", type=int,
                        help="vLLM's KV cache in tokens (default: vLLM sizes it from memory); "
                             "a small cache makes plain vLLM queue requests, as a full GPU does")
    parser.add_argument("--simulate", action="store_true",
                        help="replay on the simulator instead (call times fitted on one real run)")
    parser.add_argument("--sim-workflows", type=int, default=200)
    parser.add_argument("--no-fill", dest="fill", action="store_false",
                        help="skip the offline filling measurement")
    parser.add_argument("--token-scale", type=float, default=0.1)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replicas", type=int, default=1,
                        help="2 or more: round robin vs workload-balanced dispatch on that many "
                             "engine replicas (Ray actors), alpha tuned on a recorded run")
    parser.add_argument("--trace-out", help="with --replicas: write the recorded run's calls here")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--plot", help="write an HTML plot of attainment against scale here")
    args = parser.parse_args()
    if args.quick:
        args.workflows, args.loads, args.scales = 8, [0.9], [1.5, 3.0]
    asyncio.run(main(args))
