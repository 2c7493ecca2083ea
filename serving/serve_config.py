"""`serve.yaml`: what `sluice serve` runs, checked like a recipe (errors at file:line:column).

    model: {path: ./tiny-llama, name: tiny}     # path relative to this file, or a hub id
    engine: {dtype: float32, max_model_len: 2048, kv_cache_tokens: 16384}   # EngineConfig
    schedule: {policy: urgency, max_inflight_seqs: 8}                         # Schedule
    databases: {shop: data/shop.duckdb}         # clients name a database, never send a path
    auth: {keys_file: keys.txt}                 # or keys_env: SLUICE_API_KEYS; none: open
    limits: {max_queue: 256, max_body_bytes: 1048576}   # max_queue default: 2 x engine slots
    slo: {completion_ms: 30000, sql_ask_ms: 60000}
    text2sql: {candidates: 4, revisions: 2}     # Text2SQLConfig, its SLO from slo.sql_ask_ms
    rewrite: {min_speedup: 1.5, runs: 5}        # RewriteConfig
    drain: {grace_s: 30}                        # SIGTERM: finish in-flight requests this long
    replicas: {count: 2, dispatch: balanced, alpha: 0.5, num_cpus: 1}   # a Ray Serve deployment

API keys are `tenant=key` entries: one a line in the keys file (`#` comments), separated by
commas or whitespace in the environment variable. A key maps to its tenant.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.engine import POLICIES, EngineConfig, EngineConfigError, Schedule
from sluice.engine.config import looks_like_path
from sluice.operators.base import closest_name
from sluice.operators.recipe import RecipeError, _Doc, parse, read_recipe_text
from sluice.sql_agent.rewrite.pipeline import RewriteConfig
from sluice.sql_agent.text2sql.agent import Text2SQLConfig

DATABASE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
TENANT_KEY = re.compile(r"^([A-Za-z0-9_.-]+)=(\S+)$")
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "None": (type(None),)}


@dataclass(frozen=True)
class Limits:
    max_queue: int | None = None      # requests admitted and not finished, all tenants together;
                                      # None: twice the calls the engine runs at once
    max_body_bytes: int = 1 << 20     # a larger request body is refused with 413


@dataclass(frozen=True)
class Slo:
    completion_ms: float = 30_000     # a completion without its own slo_ms gets this
    sql_ask_ms: float = 60_000        # a Text-to-SQL question without its own slo_ms


@dataclass(frozen=True)
class Drain:
    grace_s: float = 30.0             # after SIGTERM, in-flight requests may finish this long


@dataclass(frozen=True)
class Replicas:
    count: int = 1                    # 1: one engine in the server's process; more: replicas
                                      # of a Ray Serve deployment
    dispatch: str = "balanced"        # balanced (HEXGEN's rule at `alpha`) or round-robin
    alpha: float = 0.5                # `sluice engine tune-alpha` picks one from a trace
    num_cpus: float = 1.0             # Ray CPUs per replica
    num_gpus: float = 0.0             # GPUs per replica (one each on a GPU cluster)
    ray_address: str | None = None    # a running Ray cluster; None: a local Ray

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"replicas: count must be at least 1, got {self.count}")
        if self.dispatch not in DISPATCH:
            raise ValueError(f"replicas: dispatch must be one of {', '.join(DISPATCH)}, "
                             f"got {self.dispatch!r}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"replicas: alpha must be in [0, 1], got {self.alpha}")

    @property
    def on_ray(self) -> bool:
        return self.count > 1 or self.ray_address is not None


@dataclass(frozen=True)
class ServeConfig:
    model_name: str
    engine: EngineConfig
    schedule: Schedule = field(default_factory=Schedule)
    databases: dict[str, Path] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)     # API key -> tenant; empty: no auth
    limits: Limits = field(default_factory=Limits)
    slo: Slo = field(default_factory=Slo)
    text2sql: Text2SQLConfig = field(default_factory=Text2SQLConfig)
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    drain: Drain = field(default_factory=Drain)
    replicas: Replicas = field(default_factory=Replicas)
    path: str = ""


SECTIONS = ("model", "engine", "schedule", "databases", "auth", "limits", "slo", "text2sql",
            "rewrite", "drain", "replicas")
DISPATCH = ("balanced", "round-robin")


def load_serve_config(path: str | os.PathLike) -> ServeConfig:
    """Read and check a serve config; raise RecipeError naming file:line:column."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such serve config file")
    doc = parse(read_recipe_text(path), str(path))
    if not isinstance(doc.data, dict):
        raise doc.error((), "a serve config is a mapping with sections such as model, engine, databases")
    for key in doc.data:
        if key not in SECTIONS:
            hint = closest_name(str(key), SECTIONS)
            raise doc.error((key,), f"unknown section '{key}'" + (f"; did you mean '{hint}'?" if hint
                            else f"; sections: {', '.join(SECTIONS)}"), at_key=True)
    base = path.parent
    model_path, model_name = _model(doc, base)
    engine = _section(doc, "engine", EngineConfig, {"model": model_path}, exclude=("in_process",))
    slo = _section(doc, "slo", Slo, positive=True)
    return ServeConfig(
        model_name=model_name, engine=engine, schedule=_schedule(doc),
        databases=_databases(doc, base), keys=_keys(doc, base),
        limits=_section(doc, "limits", Limits, positive=True), slo=slo,
        text2sql=_cache_beside(_section(doc, "text2sql", Text2SQLConfig,
                                        {"slo_s": slo.sql_ask_ms / 1000}), base),
        rewrite=_cache_beside(_section(doc, "rewrite", RewriteConfig), base),
        drain=_section(doc, "drain", Drain, positive=True),
        replicas=_section(doc, "replicas", Replicas), path=str(path))


def _mapping(doc: _Doc, key: str) -> dict:
    value = doc.data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error((key,), f"'{key}' must be a mapping, got {type(value).__name__}")
    return value


def _accepts(annotation: str, value: Any) -> bool:
    types = tuple(t for name in annotation.split("|") for t in _TYPES.get(name.strip(), ()))
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _section(doc: _Doc, key: str, cls, fixed: dict | None = None, *, handled: tuple = (),
             exclude: tuple = (), positive: bool = False):
    """Build dataclass `cls` from section `key`: known keys only, each of its field's type.
    `fixed` fields come from elsewhere; `handled` keys of the section were read by the caller."""
    fixed = fixed or {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in fixed and f.name not in exclude}
    values = {k: v for k, v in _mapping(doc, key).items() if k not in handled}
    for name, value in values.items():
        where = (key, name)
        if name not in fields:
            hint = closest_name(str(name), fields)
            raise doc.error(where, f"unknown {key} setting '{name}'" + (
                f"; did you mean '{hint}'?" if hint else f"; known: {', '.join(fields)}"), at_key=True)
        annotation = str(fields[name].type)
        if not _accepts(annotation, value):
            raise doc.error(where, f"{key}.{name} must be {annotation.replace('|', 'or')}, "
                                   f"got {type(value).__name__}")
        if positive and value is not None and not value > 0:
            raise doc.error(where, f"{key}.{name} must be positive, got {value!r}")
    try:
        return cls(**values, **fixed)
    except (EngineConfigError, ValueError) as e:
        raise doc.error((key,), str(e).removeprefix(f"{key}: ")) from None


def _cache_beside(config, base: Path):
    """A relative cache_dir is relative to the config file, like every other path in it."""
    if config.cache_dir is None:
        return config
    return dataclasses.replace(config, cache_dir=str((base / Path(config.cache_dir).expanduser()).resolve()))


def _model(doc: _Doc, base: Path) -> tuple[str, str]:
    spec = _mapping(doc, "model")
    for name in spec:
        if name not in ("path", "name"):
            raise doc.error(("model", name), f"unknown model setting '{name}'; use path or name", at_key=True)
    model = spec.get("path")
    if not isinstance(model, str) or not model:
        raise doc.error(("model",) if "path" not in spec else ("model", "path"),
                        "model.path is required: a local model directory or a hub id 'org/name'")
    if looks_like_path(model):
        model = str((base / Path(model).expanduser()).resolve())
    name = spec.get("name", Path(model).name)
    if not isinstance(name, str) or not name:
        raise doc.error(("model", "name"), "model.name is the id clients send as `model`: a non-empty string")
    return model, name


def _schedule(doc: _Doc) -> Schedule:
    policy = _mapping(doc, "schedule").get("policy", "urgency")
    if policy not in POLICIES:
        raise doc.error(("schedule", "policy"), f"schedule.policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    return _section(doc, "schedule", Schedule, {"policy": POLICIES[policy]()}, handled=("policy",))


def _databases(doc: _Doc, base: Path) -> dict[str, Path]:
    out = {}
    for name, value in _mapping(doc, "databases").items():
        where = ("databases", name)
        if not DATABASE_NAME.match(str(name)):
            raise doc.error(where, f"database name {name!r} may use only letters, digits, _ . -", at_key=True)
        if not isinstance(value, str):
            raise doc.error(where, f"databases.{name} is the path of a DuckDB file, got {type(value).__name__}")
        path = (base / Path(value).expanduser()).resolve()
        if not path.is_file():
            raise doc.error(where, f"databases.{name}: no such DuckDB file {path}")
        out[str(name)] = path
    return out


def _keys(doc: _Doc, base: Path) -> dict[str, str]:
    spec = _mapping(doc, "auth")
    keys: dict[str, str] = {}
    for name, value in spec.items():
        where = ("auth", name)
        if name not in ("keys_file", "keys_env"):
            raise doc.error(where, f"unknown auth setting '{name}'; use keys_file or keys_env", at_key=True)
        if not isinstance(value, str) or not value:
            raise doc.error(where, f"auth.{name} must be a non-empty string")
        if name == "keys_file":
            file = base / Path(value).expanduser()
            if not file.is_file():
                raise doc.error(where, f"auth.keys_file: no such file {file}")
            entries = [(f"{file}:{i}", line.split("#", 1)[0].strip())
                       for i, line in enumerate(file.read_text("utf-8").splitlines(), 1)]
        else:
            if value not in os.environ:
                raise doc.error(where, f"auth.keys_env: environment variable {value} is not set")
            entries = [(f"${value} entry {i}", item) for i, item in
                       enumerate(re.split(r"[\s,]+", os.environ[value]), 1)]
        for where_entry, entry in entries:
            if entry:
                _add_key(keys, where_entry, entry)
    if spec and not keys:
        raise doc.error(("auth",), "auth names no API keys; add `tenant=key` entries or leave auth out")
    return keys


def _add_key(keys: dict[str, str], where: str, entry: str) -> None:
    match = TENANT_KEY.match(entry)
    if not match:     # never echo the entry: it may be a key
        raise RecipeError(f"{where}: an API key entry is `tenant=key` (tenant: letters, digits, _ . -)")
    tenant, key = match.groups()
    if key in keys:
        raise RecipeError(f"{where}: this API key is already given (to tenant '{keys[key]}')")
    keys[key] = tenant
