"""The `text2sql` recipe operator: a dataset of questions to SQL, result and status.

Registered through the `sluice.operators` entry point group (see pyproject.toml), the way a
third-party package adds operators, so `sluice.operators` imports nothing of `sql_agent`.
Each Ray Data actor holds one online engine and one agent per database; the questions of a
batch run as concurrent workflows with a long SLO, below any deadline-bound work. A question
for which no candidate gives valid SQL is rejected with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import ClassVar, Optional

import pyarrow as pa
import pyarrow.compute as pc

from sluice.operators.base import ParamError, param, register
from sluice.operators.llm import EngineOperator

OFFLINE_SLO_S = 24 * 3600.0


@register
class text2sql(EngineOperator):
    """Writes SQL for each row's question over a DuckDB database (a CHESS-style agent: value
    retrieval, candidates, sandboxed execution and revision, selection), and adds the SQL, its
    result rows as JSON (capped) and the status. Rows whose question gets no valid SQL, or
    that name an unknown database, are rejected with the reason."""

    kind: ClassVar[str] = "llm"

    databases: dict = param(doc="database name -> DuckDB file path; rows and `database` name one")
    database: Optional[str] = param(None, doc="the database of every row (else `database_key`)")
    database_key: str = param("database", doc="row field naming the database when `database` is unset")
    question_key: str = param("question", doc="row field holding the question")
    hint_key: Optional[str] = param(None, doc="row field holding a hint (evidence), if any")
    output_key: str = param("sql", doc="column for the SQL; <output_key>_result and _status too")
    candidates: int = param(2, doc="candidate queries per question", ge=1)
    revisions: int = param(1, doc="revision rounds for failing candidates", ge=0)
    row_cap: int = param(100, doc="result rows kept per question", ge=1)
    timeout_s: float = param(10.0, doc="seconds per candidate statement", gt=0)
    max_tokens: int = param(256, doc="tokens per candidate answer", ge=1)
    cache_dir: Optional[str] = param(None, doc="schema profile and value index cache folder")

    def setup(self) -> None:
        for name, path in self.databases.items():
            if not os.path.isfile(path):
                raise ParamError(self.name, "databases", f"database '{name}': no such file {path}")
        if self.database is not None and self.database not in self.databases:
            raise ParamError(self.name, "database", f"'{self.database}' is not one of the declared "
                                                    f"databases ({', '.join(self.databases)})")
        super().setup()

    def agent_config(self):
        from .agent import Text2SQLConfig  # the agent (DuckDB, sqlglot, datasketch) only when a run uses it

        return Text2SQLConfig(candidates=self.candidates, revisions=self.revisions,
                              max_tokens=self.max_tokens, row_cap=self.row_cap,
                              timeout_s=self.timeout_s, slo_s=OFFLINE_SLO_S,
                              cache_dir=self.cache_dir, seed=self.seed or 0)

    def apply(self, ds, ctx):
        import ray

        return ds.map_batches(Text2SQLActor, fn_constructor_args=(self,), batch_format="pyarrow",
                              compute=ray.data.ActorPoolStrategy(size=self.num_actors),
                              num_gpus=self.num_gpus_per_actor or None,
                              runtime_env={"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}})


class Text2SQLActor:
    """Ray Data actor: one online engine, one agent per database, kept for every batch."""

    def __init__(self, op: text2sql):
        from sluice.engine import OnlineEngine

        self.op = op
        # Ray Data calls the actor from its own threads; the engine's loop runs in one thread
        # of its own for the actor's life, and batches are handed to it.
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="text2sql-engine").start()
        self.engine = OnlineEngine(op.engine_config(in_process=False))
        self._run(self.engine.__aenter__())
        self.agents: dict = {}  # database name -> its Text2SQL agent

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _batch(self, rows: list[dict]) -> list[tuple]:
        return await asyncio.gather(*(self._one(r) for r in rows))

    def _agent(self, name: str):
        from .agent import Text2SQL

        if name not in self.agents:
            self.agents[name] = Text2SQL(self.op.databases[name], self.engine, self.op.agent_config())
        return self.agents[name]

    async def _one(self, row: dict) -> tuple[str | None, str | None, str, str | None]:
        """(sql, result JSON, status, reject reason) for one row."""
        op = self.op
        name = op.database or row.get(op.database_key)
        if name not in op.databases:
            return None, None, "error", f"{op.name}: unknown database {name!r}; declared: {', '.join(op.databases)}"
        question = row.get(op.question_key)
        if not isinstance(question, str) or not question.strip():
            return None, None, "error", f"{op.name}: no question in field '{op.question_key}'"
        answer = await self._agent(name).ask_async(question, hint=row.get(op.hint_key) if op.hint_key else None)
        if not answer.ok:
            return None, None, answer.status, f"{op.name}: {answer.status}: {answer.reason}"
        result = json.dumps({"columns": answer.columns, "rows": [list(r) for r in answer.rows],
                             "truncated": answer.truncated}, default=str)
        return answer.sql, result, answer.status, None

    def __call__(self, table: pa.Table) -> pa.Table:
        outs = self._run(self._batch(table.to_pylist()))
        sql, result, status, reasons = (list(col) for col in zip(*outs)) if outs else ([], [], [], [])
        key = self.op.output_key
        table = table.append_column(key, pa.array(sql, pa.string()))
        table = table.append_column(f"{key}_result", pa.array(result, pa.string()))
        table = table.append_column(f"{key}_status", pa.array(status, pa.string()))
        reasons = pa.array(reasons, pa.string())
        return self.op.reject(table, pc.is_valid(reasons), reasons)

    def __del__(self):
        for agent in getattr(self, "agents", {}).values():
            agent.close()
        engine = getattr(self, "engine", None)
        if engine is not None:
            self._run(engine.close())
            self.loop.call_soon_threadsafe(self.loop.stop)
