"""YAML recipes: templating, validation with file:line:column errors, compilation to a Pipeline.

A recipe is rendered with jinja2 (variables from `--set key=value` and `env`), parsed, checked
key by key, and compiled to the same `Pipeline` a Python user builds. A Data-Juicer text config
(`dataset_path`, `export_path`, `process`) is accepted as it is.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import json
import os
import re
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import yaml

from .base import (ParamError, as_number, closest_name, create_operator, get_operator, load_builtin_operators,
                   param_problems)
from .export import Export, ExportError
from .io import Source
from .pipeline import Pipeline, RunResult
from .stage import OperatorFailed
from .template_lines import render_with_lines
from .trace import TraceSettings

SOURCE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# key -> (accepted types, what it is)
SLUICE_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "recipe name"),
    "description": ((str,), "what the recipe does"),
    "input": ((str,), "one input path (file, directory or glob)"),
    "inputs": ((list,), "inputs: paths or {path, name, weight}"),
    "output": ((str, dict), "output directory, or {path, format}"),
    "text_key": ((str,), "field holding the text (default: text)"),
    "keep_stats": ((bool,), "keep stats.* columns in the output"),
    "seed": ((int,), "seed for sampling and mixing"),
    "ray": ((dict,), "{address, num_cpus, shared_fs}"),
    "modules": ((list,), "user operator modules: .py paths or dotted names"),
    "process": ((list,), "operators in order: - op_name: {params}"),
}
# Data-Juicer global keys sluice reads; the rest of Data-Juicer's globals are accepted and ignored.
DJ_KEYS = {"project_name", "dataset_path", "export_path", "np", "text_keys", "process",
           "ray_address", "keep_stats_in_res_ds", "seed", "use_checkpoint", "export_type",
           "export_shard_size", "suffixes", "skip_op_error", "keep_hashes_in_res_ds", "open_tracer",
           "trace_num", "op_list_to_trace"}
# Data-Juicer keys that change nothing in a sluice run: caching, fusion, parallel export,
# logging (sluice fuses, checkpoints and reports in its own way). Not named in the summary.
DJ_NO_EFFECT = {"executor_type", "op_fusion", "fusion_strategy", "cache_compress", "use_cache",
                "ds_cache_dir", "temp_dir", "export_in_parallel", "turbo", "event_logging",
                "adaptive_batch_size", "debug"}
DJ_IGNORED = DJ_NO_EFFECT | {
    "open_monitor", "add_suffix", "work_dir", "save_stats_in_one_file", "image_key", "audio_key",
    "video_key", "image_special_token", "audio_special_token", "video_special_token", "eoc_special_token",
    "auto", "auto_num", "hpo_config", "data_probe_algo", "data_probe_ratio", "percentiles",
    "export_original_dataset", "load_dataset_kwargs", "open_insight_mining", "op_list_to_mine",
    "dataset", "validators", "partition_size", "checkpoint", "export_extra_args",
}
# Data-Juicer globals that hold numbers (YAML reads `1e6` as text).
DJ_NUMBERS = {"np", "seed", "export_shard_size", "trace_num"}
OUTPUT_FORMATS = ("parquet", "jsonl")


class RecipeError(ValueError):
    """A recipe problem a user can fix, as `file:line:column: message`. A recipe with several
    problems raises one RecipeError holding all of them (`errors`); its first line names the
    first and how many more there are."""

    def __init__(self, message: str, errors: list[str] | None = None):
        self.errors = errors or [message]
        super().__init__(message)

    @classmethod
    def of(cls, errors: list[str]) -> "RecipeError":
        more = len(errors) - 1
        first = errors[0] + (f" (and {more} more: `sluice validate` lists every one)" if more else "")
        return cls(first, errors)


@dataclass
class Recipe:
    name: str
    pipeline: Pipeline
    sources: list[Source]
    output: str
    output_format: str = "parquet"
    keep_stats: bool = False
    seed: int = 42
    ray_address: str | None = None
    num_cpus: int | None = None
    path: str = ""
    modules: list[str] = field(default_factory=list)   # user code this recipe loaded and ran
    resume: bool = False   # continue an interrupted run (Data-Juicer's use_checkpoint)
    shared_fs: bool = False  # every node of the Ray cluster mounts the inputs and output at the same paths
    export: Export | None = None  # a Data-Juicer export_path: the result file(s) beside `output`

    def run(self, *, analyze: bool = False, quiet: bool = False, ray_address: str | None = None,
            overwrite: bool = False, resume: bool = False, shared_fs: bool = False,
            executor: str = "auto") -> RunResult:
        check_ray_reachable(ray_address or self.ray_address)
        earlier = self.export.check_target(overwrite) if self.export is not None else []
        try:
            result = self.pipeline.run(self.sources, self.output, output_format=self.output_format,
                                       analyze=analyze, keep_stats=self.keep_stats, seed=self.seed,
                                       ray_address=ray_address or self.ray_address, num_cpus=self.num_cpus,
                                       quiet=quiet, overwrite=overwrite, resume=resume or self.resume,
                                       shared_fs=shared_fs or self.shared_fs, executor=executor)
        except OperatorFailed as e:  # raised in a Ray worker: its first line is Ray's
            raise OperatorFailed(str(getattr(e, "cause", None) or e)) from None
        if self.export is None:
            return result
        files = self.export.write(result.data_path, earlier)
        result.data_path.rmdir()
        summary = {**result.summary, "output": str(self.export.path), "output_format": self.export.format,
                   "output_files": [str(f) for f in files]}
        (result.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return RunResult(summary=summary, output_dir=result.output_dir, data_files=files)


@dataclass
class _Doc:
    """Parsed YAML with the position of every key and value."""

    filename: str
    data: Any
    lines: list[int] | None = None                  # rendered line -> template line (see `at`)
    marks: dict = field(default_factory=dict)       # path -> value mark
    key_marks: dict = field(default_factory=dict)   # path -> key mark
    problems: list = field(default_factory=list)    # errors found so far, to report together

    def error(self, path: tuple, message: str, at_key: bool = False) -> RecipeError:
        mark = None
        for p in [path[:i] for i in range(len(path), -1, -1)]:
            mark = (self.key_marks.get(p) if at_key and p == path else None) or self.marks.get(p)
            if mark is not None:
                break
        return RecipeError(f"{at(self.filename, mark, self.lines) if mark else self.filename}: {message}")

    def note(self, path: tuple, message: str, at_key: bool = False) -> None:
        """Record an error and go on checking the rest of the recipe."""
        self.problems.append(str(self.error(path, message, at_key)))

    def attempt(self, check, *args, default=None):
        """`check(*args)`, or `default` with its RecipeError noted."""
        try:
            return check(*args)
        except RecipeError as e:
            self.problems.extend(e.errors)
            return default

    def raise_problems(self) -> None:
        if self.problems:
            raise RecipeError.of(self.problems)


def check_inputs(recipe: Recipe) -> None:
    """Every input names at least one file (raised as InputError naming the input)."""
    for source in recipe.sources:
        source.files()


def check_ray_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A `host:port` cluster address answers within seconds, or this says so (ray.init would
    wait for minutes). `auto` and `local` are Ray's to resolve."""
    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise RecipeError(f"ray address '{address}' is not host:port (or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RecipeError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); "
                          "check the address, or leave it out to run on this machine") from None


def builtin_recipes() -> list[str]:
    root = importlib.resources.files("sluice.recipes")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe file by path, or a built-in recipe by name (webtext_clean)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = importlib.resources.files("sluice.recipes") / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if builtin.is_file():
        return Path(str(builtin))
    names = builtin_recipes()
    hint = closest_name(name_or_path, names)
    raise RecipeError(f"{name_or_path}: no such recipe file or built-in recipe"
                      + (f"; did you mean '{hint}'?" if hint else f"; built-ins: {', '.join(names)}"))


# What a recipe template may use: its variables, `env`, and these filters; nothing else.
TEMPLATE_FILTERS = ("default", "d", "lower", "upper", "trim", "replace", "string", "int", "float")
MAX_RECIPE_BYTES = 1 << 20
MAX_YAML_NODES = 100_000     # after aliases are expanded: an alias bomb stops here


class _Values:
    """--set values and environment variables stand in the template as opaque tokens and are
    put back into the parsed YAML as values, so no value can add keys or change structure."""

    def __init__(self):
        self.by_token: dict[str, str] = {}
        self._nonce = secrets.token_hex(6)

    def token(self, value: str) -> str:
        token = f"__sluice_value_{self._nonce}_{len(self.by_token)}__"
        self.by_token[token] = value
        return token


def _template_env() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined,
                                                       keep_trailing_newline=True)
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in TEMPLATE_FILTERS}
    env.tests = {name: env.tests[name] for name in ("defined", "undefined", "none")}
    return env


def render(text: str, filename: str, variables: dict[str, str], values: _Values) -> tuple[str, list[int]]:
    """The rendered recipe, and the template line each of its lines comes from."""
    env = _template_env()
    context = {name: values.token(str(v)) for name, v in variables.items()}
    context["env"] = {name: values.token(v) for name, v in os.environ.items()}
    try:
        return render_with_lines(env, text, context)
    except jinja2.TemplateSyntaxError as e:
        raise RecipeError(f"{filename}:{e.lineno}:1: template error: {e.message}") from None
    except jinja2.sandbox.SecurityError as e:
        raise RecipeError(f"{filename}: template error: {str(e).rstrip('.')}; a recipe template may use only its "
                          "variables, env and the filters " + ", ".join(TEMPLATE_FILTERS)) from None
    except jinja2.UndefinedError as e:
        name = re.search(r"'([^']+)' is undefined", str(e))
        if name is None:
            raise RecipeError(f"{filename}: template error: {e}") from None
        var = name.group(1)
        if var in jinja2.Environment().filters or var in jinja2.Environment().globals:
            raise RecipeError(f"{filename}:{_line_of(text, var)}:1: template error: '{var}' is "
                              "not available in recipes") from None
        raise RecipeError(f"{filename}:{_line_of(text, var)}:1: template variable '{var}' is "
                          f"undefined; pass --set {var}=VALUE or give it a default: "
                          f"{{{{ {var} | default('...') }}}}") from None
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{filename}: template error: {e}") from None


def read_recipe_text(path: Path) -> str:
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: recipe is {path.stat().st_size:,} bytes; the limit is "
                          f"{MAX_RECIPE_BYTES:,} (a recipe lists operators, not data)")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _line_of(text: str, word: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if re.search(rf"\b{re.escape(word)}\b", line):
            return i
    return 1


def at(filename: str, mark, lines: list[int] | None = None) -> str:
    """`file:line:column` of a YAML mark; with `lines` (rendered line -> template line) the
    line is the file's (the column stays the rendered line's)."""
    line = lines[mark.line] if lines and mark.line < len(lines) else mark.line + 1
    return f"{filename}:{line}:{mark.column + 1}"


def parse(text: str, filename: str, values: _Values | None = None, lines: list[int] | None = None) -> _Doc:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        raise RecipeError(f"{at(filename, e.problem_mark, lines)}: invalid YAML: {e.problem}") from None
    if node is None:
        return _Doc(filename, None, lines)
    _check_size(node, filename, lines)
    if values is not None and values.by_token:
        _put_values_back(node, values.by_token)
    try:
        data = yaml.SafeLoader("").construct_document(node)
    except yaml.MarkedYAMLError as e:
        raise RecipeError(f"{at(filename, e.problem_mark, lines)}: invalid YAML: {e.problem}") from None
    doc = _Doc(filename, data, lines)
    _collect_marks(node, (), doc)
    return doc


def _check_size(root, filename: str, lines: list[int] | None) -> None:
    """Count nodes as they would be after alias expansion, without expanding them."""
    expanded: dict[int, int] = {}

    def size(node) -> int:
        if id(node) in expanded:
            return expanded[id(node)]
        expanded[id(node)] = 1  # a recursive alias counts once
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        expanded[id(node)] = total
        if total > MAX_YAML_NODES:
            raise RecipeError(f"{at(filename, node.start_mark, lines)}: the recipe expands to "
                              f"more than {MAX_YAML_NODES:,} YAML nodes (aliases included); "
                              "a recipe this large is refused")
        return total

    size(root)


def _put_values_back(node, by_token: dict[str, str], seen=None) -> None:
    """Each token becomes its value. A plain scalar that is just one token is read as one YAML
    scalar (`--set seed=7` is the number 7); a value that would parse as a list or mapping, or a
    token inside longer text, stays a string."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        if "__sluice_value_" not in node.value:
            return
        whole = by_token.get(node.value)
        if whole is not None and node.style is None:
            node.value, node.tag = whole, _scalar_tag(whole)
        else:
            node.value = re.sub(r"__sluice_value_[0-9a-f]+_\d+__",
                                lambda m: by_token.get(m.group(0), m.group(0)), node.value)
            node.tag = "tag:yaml.org,2002:str"
        return
    children = node.value if isinstance(node, yaml.SequenceNode) else (
        [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else [])
    for child in children:
        _put_values_back(child, by_token, seen)


def _scalar_tag(value: str) -> str:
    tag = yaml.SafeLoader("").resolve(yaml.ScalarNode, value, (True, False))
    return tag if "\n" not in value else "tag:yaml.org,2002:str"


def _collect_marks(node, path, doc: _Doc) -> None:
    doc.marks[path] = node.start_mark
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            doc.key_marks[path + (key.value,)] = key.start_mark
            _collect_marks(value, path + (key.value,), doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_marks(item, path + (i,), doc)


def load_recipe(name_or_path: str, variables: dict[str, str] | None = None) -> Recipe:
    """Render, validate and compile a recipe; raise RecipeError naming file:line:column."""
    path = resolve_recipe(name_or_path)
    filename = str(path)
    values = _Values()
    text, lines = render(read_recipe_text(path), filename, variables or {}, values)
    doc = parse(text, filename, values, lines)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a recipe is a mapping of keys such as name, inputs, output, process")
    if "dataset_path" in doc.data or "export_path" in doc.data:
        return _compile_data_juicer(doc, path)
    return _compile(doc, path)


def _check_keys(doc: _Doc) -> None:
    for key, value in doc.data.items():
        if key not in SLUICE_KEYS:
            hint = closest_name(str(key), SLUICE_KEYS)
            doc.note((key,), f"unknown key '{key}'" + (f"; did you mean '{hint}'?" if hint else
                     f"; known keys: {', '.join(SLUICE_KEYS)}"), at_key=True)
            continue
        types, what = SLUICE_KEYS[key]
        well_typed = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        if value is not None and not well_typed:
            names = " or ".join(t.__name__ for t in types)
            doc.note((key,), f"'{key}' ({what}) must be {names}, got {type(value).__name__}")
    doc.raise_problems()


def _compile(doc: _Doc, path: Path) -> Recipe:
    _check_keys(doc)
    d = doc.data
    if "name" not in d:
        doc.note((), "missing key 'name'; add `name: my_recipe` at the top")
    sources = []
    if ("input" in d) == ("inputs" in d):
        doc.note((), "give exactly one of 'input' (a path) or 'inputs' (a list)")
    elif "input" in d:
        sources = [Source(d["input"])]
    else:
        sources = [s for i, spec in enumerate(d["inputs"]) if (s := doc.attempt(_source, doc, i, spec))]
    names = [s.source_name() for s in sources]
    if len(set(names)) != len(names):
        doc.note(("inputs",), f"input names must differ, got {names}; set `name:` on each input")
    output, fmt = doc.attempt(_output, doc, d.get("output"), default=(None, None))
    ray_opts = d.get("ray") or {}
    for key in ray_opts:
        if key not in ("address", "num_cpus", "shared_fs"):
            doc.note(("ray", key), f"unknown ray option '{key}'; use address, num_cpus or shared_fs", at_key=True)
    doc.attempt(_check_num_cpus, doc, ("ray", "num_cpus"), ray_opts.get("num_cpus"))
    doc.attempt(_load_modules, doc, path)
    ops = _operators(doc, d.get("process") or [], d.get("text_key", "text"))
    doc.raise_problems()
    if any(s.weight is not None for s in sources) and not any(op.name == "source_mixer" for op in ops):
        ops.append(create_operator("source_mixer", {"seed": d.get("seed", 42)}))
    return Recipe(name=d["name"], pipeline=Pipeline(ops, text_key=d.get("text_key", "text")),
                  sources=sources, output=output, output_format=fmt,
                  keep_stats=bool(d.get("keep_stats", False)), seed=d.get("seed", 42),
                  ray_address=ray_opts.get("address"), num_cpus=ray_opts.get("num_cpus"), path=str(path),
                  modules=[str(m) for m in d.get("modules") or []], shared_fs=ray_opts.get("shared_fs") is True)


def _check_num_cpus(doc: _Doc, where: tuple, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise doc.error(where, f"{'.'.join(where)} is the number of CPUs Ray may use: a whole "
                               f"number of at least 1 (or null for all), got {value!r}")


def _source(doc: _Doc, i: int, spec) -> Source:
    where = ("inputs", i)
    if isinstance(spec, str):
        return Source(spec)
    if not isinstance(spec, dict) or "path" not in spec:
        raise doc.error(where, "each input is a path or a mapping with 'path' (and optional name, weight)")
    for key in spec:
        if key not in ("path", "name", "weight"):
            raise doc.error(where + (key,), f"unknown input key '{key}'; use path, name or weight", at_key=True)
    weight = spec.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0):
        raise doc.error(where + ("weight",), f"weight must be a number >= 0, got {weight!r}")
    name = spec.get("name")
    if name is not None and not SOURCE_NAME.match(str(name)):
        raise doc.error(where + ("name",), f"input name {name!r} may use only letters, digits, _ . -")
    return Source(str(spec["path"]), name, None if weight is None else float(weight))


def _output(doc: _Doc, spec) -> tuple[str, str]:
    if spec is None:
        raise doc.error((), "missing key 'output'; add `output: out/my_run`")
    if isinstance(spec, str):
        return spec, "parquet"
    for key in spec:
        if key not in ("path", "format"):
            raise doc.error(("output", key), f"unknown output key '{key}'; use path or format", at_key=True)
    if "path" not in spec:
        raise doc.error(("output",), "output needs 'path'")
    fmt = spec.get("format", "parquet")
    if fmt not in OUTPUT_FORMATS:
        raise doc.error(("output", "format"), f"output format '{fmt}' is not one of {', '.join(OUTPUT_FORMATS)}")
    return str(spec["path"]), fmt


def _load_modules(doc: _Doc, recipe_path: Path) -> None:
    for i, spec in enumerate(doc.data.get("modules") or []):
        candidate = (recipe_path.parent / spec) if not os.path.isabs(spec) else Path(spec)
        try:
            if str(spec).endswith(".py"):
                if not candidate.is_file():
                    raise doc.error(("modules", i), f"operator module file '{spec}' not found (relative to the recipe)")
                module_name = f"sluice_user_{candidate.stem}"
                spec_obj = importlib.util.spec_from_file_location(module_name, candidate)
                module = importlib.util.module_from_spec(spec_obj)
                sys.modules[module_name] = module
                spec_obj.loader.exec_module(module)
            else:
                importlib.import_module(spec)
        except ImportError as e:
            raise doc.error(("modules", i), f"cannot import operator module '{spec}': {e}") from None


def _operators(doc: _Doc, process, text_key: str) -> list:
    """The process steps as operators. Every step is checked, and every problem of a step's
    parameters noted, before the recipe's errors are raised together."""
    load_builtin_operators()
    ops = []
    for i, entry in enumerate(process):
        where = ("process", i)
        if isinstance(entry, str):
            entry = {entry: None}
        if not isinstance(entry, dict) or len(entry) != 1:
            doc.note(where, "each process step is one `- op_name: {params}` mapping")
            continue
        (name, params), = entry.items()
        params = params or {}
        if not isinstance(params, dict):
            doc.note(where + (name,), f"parameters of '{name}' must be a mapping, got {type(params).__name__}")
            continue
        try:
            cls = get_operator(name)
            if "text_key" in {s.name for s in cls.param_specs()} and "text_key" not in params:
                params = {**params, "text_key": text_key}
            problems = param_problems(cls, params)
            for problem in problems:
                _note_param_error(doc, where, name, params, problem)
            if not problems:
                ops.append(create_operator(name, params))
        except ParamError as e:
            _note_param_error(doc, where, name, params, e)
        except ValueError as e:
            doc.note(where + (name,), f"{name}: {e}")
    return ops


def _note_param_error(doc: _Doc, where: tuple, name: str, params: dict, e: ParamError) -> None:
    if e.param is None:
        doc.note(where, e.message, at_key=True)
        return
    at_key = "unknown parameter" in e.message
    param_path = where + (name, e.param) if e.param in params else where + (name,)
    doc.note(param_path, f"{name}.{e.param}: {e.message}", at_key=at_key)


def _compile_data_juicer(doc: _Doc, path: Path) -> Recipe:
    d = doc.data = {k: as_number(v) if k in DJ_NUMBERS else v for k, v in doc.data.items()}
    for key in d:
        if key not in DJ_KEYS and key not in DJ_IGNORED:
            hint = closest_name(str(key), DJ_KEYS | DJ_IGNORED)
            doc.note((key,), f"unknown Data-Juicer key '{key}'" + (f"; did you mean '{hint}'?" if hint else ""),
                     at_key=True)
    if "dataset_path" not in d or "export_path" not in d:
        raise doc.error((), "a Data-Juicer config needs both dataset_path and export_path")
    doc.attempt(_check_num_cpus, doc, ("np",), d.get("np"))
    suffixes = d.get("suffixes") or None
    if isinstance(suffixes, str):
        suffixes = [suffixes]
    if suffixes is not None and not (isinstance(suffixes, list) and all(isinstance(x, str) for x in suffixes)):
        doc.note(("suffixes",), "suffixes is a list of file suffixes to read, e.g. ['.jsonl', '.parquet']")
        suffixes = None
    sources = doc.attempt(_dj_sources, doc, str(d["dataset_path"]), suffixes, default=[])
    export = doc.attempt(_dj_export, doc, d)
    for key in ("skip_op_error", "keep_hashes_in_res_ds", "keep_stats_in_res_ds", "open_tracer"):
        if key in d and not isinstance(d[key], bool):
            doc.note((key,), f"{key} is true or false, got {d[key]!r}")
    trace = doc.attempt(_dj_trace, doc, d)
    text_keys = d.get("text_keys", "text")
    text_key = text_keys[0] if isinstance(text_keys, list) else str(text_keys)
    ops = _operators(doc, d.get("process") or [], text_key)
    doc.raise_problems()
    if d.get("keep_hashes_in_res_ds") is True:
        for op in ops:
            if hasattr(op, "keep_hash"):
                op.keep_hash = True
    if any(s.weight is not None for s in sources):
        ops.insert(0, create_operator("source_mixer", {"seed": d.get("seed", 42)}))
    ignored = sorted(k for k in d if k in DJ_IGNORED and k not in DJ_NO_EFFECT)
    notes = [f"Data-Juicer keys sluice does not use: {', '.join(ignored)}"] if ignored else []
    pipeline = Pipeline(ops, text_key=text_key, notes=notes, skip_op_error=d.get("skip_op_error", True) is not False,
                        trace=trace)
    return Recipe(name=str(d.get("project_name", path.stem)), pipeline=pipeline,
                  sources=sources, output=str(export.run_folder), export=export,
                  output_format="parquet" if export.format == "parquet" else "jsonl",
                  keep_stats=bool(d.get("keep_stats_in_res_ds", False)), seed=d.get("seed", 42),
                  ray_address=d.get("ray_address") if d.get("ray_address") not in (None, "auto") else None,
                  num_cpus=d.get("np"), path=str(path), resume=d.get("use_checkpoint") is True)


def _dj_trace(doc: _Doc, d: dict) -> TraceSettings | None:
    """open_tracer, trace_num and op_list_to_trace as the run's trace settings."""
    limit, ops = d.get("trace_num", 10), d.get("op_list_to_trace") or []
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise doc.error(("trace_num",), f"trace_num is the number of rows traced per operator (at least 1), "
                                        f"got {limit!r}")
    if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
        raise doc.error(("op_list_to_trace",), "op_list_to_trace is a list of operator names")
    for i, name in enumerate(ops):
        doc.attempt(_known_operator, doc, ("op_list_to_trace", i), name)
    return TraceSettings(limit, tuple(ops)) if d.get("open_tracer") is True else None


def _known_operator(doc: _Doc, where: tuple, name: str) -> None:
    try:
        get_operator(name)
    except ParamError as e:
        raise doc.error(where, f"op_list_to_trace: {e.message}") from None


def _dj_export(doc: _Doc, d: dict) -> Export:
    try:
        return Export.of(str(d["export_path"]), d.get("export_type"), d.get("export_shard_size", 0))
    except ExportError as e:
        key = "export_shard_size" if "export_shard_size" in str(e) else "export_path"
        raise doc.error((key,), str(e)) from None


def _dj_sources(doc: _Doc, spec: str, suffixes: list[str] | None) -> list[Source]:
    """Data-Juicer's dataset_path: `path` or `w1 path1 w2 path2 ...`; `suffixes` selects the
    files of a directory by their suffix."""
    parts = spec.split()
    picked = tuple(suffixes) if suffixes else None
    if len(parts) == 1:
        return [Source(parts[0], suffixes=picked)]
    try:
        pairs = [(float(parts[i]), parts[i + 1]) for i in range(0, len(parts), 2)]
    except (ValueError, IndexError):
        raise doc.error(("dataset_path",), "dataset_path is a path or pairs of 'weight path'") from None
    return [Source(p, f"{Path(p).stem}_{i}" if i else Path(p).stem, w, suffixes=picked)
            for i, (w, p) in enumerate(pairs)]
