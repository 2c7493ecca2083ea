"""The `sluice` command line: run and validate recipes, list operators, SQL tools, serve."""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
from importlib.metadata import version

from sluice.serving.engine_cli import add_engine_commands
from sluice.serving.json_stdout import reserve_stdout, write_json
from sluice.serving.serve_cli import add_serve_command
from sluice.serving.sql_cli import add_sql_commands


def _variables(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes key=value, got '{pair}'")
        out[key.strip()] = value
    return out


def cmd_run(args) -> int:
    json_out = reserve_stdout() if args.json else None  # before anything can print
    from sluice.operators.recipe import load_recipe
    from sluice.operators.report import format_summary

    from sluice.operators.commit import partial_folder

    recipe = load_recipe(args.recipe, _variables(args.set))
    try:
        result = recipe.run(analyze=args.analyze, quiet=args.quiet, ray_address=args.ray_address,
                            overwrite=args.overwrite, resume=args.resume, shared_fs=args.shared_fs,
                            executor=args.executor)
    except KeyboardInterrupt:
        partial = partial_folder(recipe.output)
        raise KeyboardInterrupt(f"{recipe.output} is as it was; the input files finished so far are kept in "
                                f"{partial}: add --resume to continue" if partial.exists() else "") from None
    s = result.summary
    if json_out is not None:
        write_json(json_out, s)
        return 0 if s["accounted"] else 3
    print(format_summary(s))
    print(f"output:  {s['output']} ({s['output_format']}, {s['rows_kept']:,} rows)")
    print(f"rejects: {s['rejects']} ({sum(s['rejected'].values()):,} rows)")
    print(f"report:  {s['report']}")
    print(f"summary: {result.output_dir / 'summary.json'}")
    if s["resumed_parts"]:
        unit = "files" if s["input_parts"] == len(s["inputs"]) else "parts"
        print(f"resumed: {s['resumed_parts']} of {s['input_parts']} input {unit} from the interrupted run")
    return 0 if s["accounted"] else 3


def cmd_validate(args) -> int:
    from sluice.operators.recipe import RecipeError, check_inputs, load_recipe

    try:
        recipe = load_recipe(args.recipe, _variables(args.set))
    except RecipeError as e:  # every problem of the recipe, one line each
        for error in e.errors:
            print(f"sluice: error: {one_line(error)}", file=sys.stderr)
        return EXIT_INPUT
    check_inputs(recipe)
    target = (f"{recipe.export.path} ({recipe.export.format}; sluice's files in {recipe.output})"
              if recipe.export else f"{recipe.output} ({recipe.output_format})")
    print(f"{recipe.path}: ok: recipe '{recipe.name}', {len(recipe.sources)} input(s), "
          f"{len(recipe.pipeline.ops)} operator(s) -> {target}")
    for op in recipe.pipeline.ops:
        print(f"  {op!r}")
    for module in recipe.modules:
        print(f"  modules: {module} is Python code; it was imported to check the recipe and "
              "runs again with `sluice run`")
    return 0


def _first_sentence(doc: str | None) -> str:
    text = " ".join(inspect.cleandoc(doc or "").split())
    return re.split(r"(?<=[.;])\s", text, maxsplit=1)[0]


def cmd_ops(args) -> int:
    from sluice.operators.base import OPERATORS, get_operator, load_builtin_operators
    from sluice.operators.dj_catalog import (DATA_JUICER_COMMIT, NEEDS_MODEL, OPTIONAL_MODEL,
                                             data_juicer_status)

    load_builtin_operators()
    groups = data_juicer_status()
    if args.data_juicer:
        print(f"Data-Juicer's text operators (modelscope/data-juicer {DATA_JUICER_COMMIT}):")
        for group, names in groups.items():
            print(f"\n{group} ({len(names)}):")
            for name in names:
                note = NEEDS_MODEL.get(name) or OPTIONAL_MODEL.get(name, "")
                print(f"  {name:<46} {note}".rstrip())
        return 0
    if args.name is None:
        for name in sorted(OPERATORS, key=lambda n: (OPERATORS[n].kind, n)):
            cls = OPERATORS[name]
            print(f"{cls.kind:<13} {name:<36} {_first_sentence(cls.__doc__)}")
        print(f"\nData-Juicer text operators: {len(groups['runs'])} run here, {len(groups['needs a model file'])} "
              f"need a model file, {len(groups['missing'])} are not in sluice (`sluice ops --data-juicer`)")
        return 0
    cls = get_operator(args.name)
    print(f"{cls.name} ({cls.kind})\n")
    print(textwrap.indent(inspect.cleandoc(cls.__doc__ or ""), "  ") + "\n")
    for spec in cls.param_specs():
        default = "required" if spec.required else f"default {spec.default!r}"
        bounds = ", ".join(f"{k} {v}" for k, v in (("min", spec.ge), (">", spec.gt), ("max", spec.le)) if v is not None)
        extra = f"; {bounds}" if bounds else ""
        print(f"  {spec.name}: {spec.type_name()} ({default}{extra})\n      {spec.doc}")
    return 0


EXIT_CODES = """exit codes:
  0    done
  1    sql rewrite batch: some queries failed (each is in the report); sql ask: no valid SQL
  2    an error you can fix (recipe, serve config, parameter, input, database); one line
       on stderr; serve: the server could not start
  3    run: not every input row is accounted for; sql rewrite: the query ran past --timeout
  130  interrupted (Ctrl-C); Ray was stopped; run: the output folder is as it was and
       `sluice run ... --resume` continues from the input files finished"""
EXIT_INPUT, EXIT_INTERRUPTED = 2, 130
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe file, or a built-in recipe name such as webtext_clean")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="template variable for the recipe's {{ KEY }} (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Data for LLMs and LLMs for data, on Ray Data.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('sluice')}",
                        help="print the installed sluice's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a recipe (a YAML file or a built-in recipe name)")
    _recipe_arguments(run)
    run.add_argument("--ray-address", help="address of a running Ray cluster (default: local Ray)")
    run.add_argument("--executor", choices=("auto", "local", "ray"), default="auto",
                     help="where the run executes: ray (Ray Data), local (this process, no Ray), or auto: "
                          "local when the input's text takes at most a fifth of free memory (.gz, .zst and Parquet "
                          "count 4 times their size) and every operator runs in one process")
    run.add_argument("--analyze", action="store_true", help="compute stats and the report; drop nothing")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--json", action="store_true",
                     help="print the run summary (as in summary.json) as JSON on stdout, and nothing "
                          "else there: whatever vLLM, Ray or an operator prints goes to stderr")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run of the same recipe and inputs from the input files it finished")
    run.add_argument("--shared-fs", action="store_true",
                     help="on a cluster of several nodes: every node mounts the local inputs and output at the same "
                          "paths (URIs such as s3://bucket/out need no flag)")
    run.add_argument("--overwrite", action="store_true",
                     help="let the run replace an output folder that holds files sluice did not write")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a recipe without running it")
    _recipe_arguments(validate)
    validate.set_defaults(func=cmd_validate)

    ops = sub.add_parser("ops", help="list operators, or show one with its parameters")
    ops.add_argument("name", nargs="?", help="an operator to show with its parameters (default: list them all)")
    ops.add_argument("--data-juicer", action="store_true",
                     help="Data-Juicer's text operators: which run, which need a model file, which are missing")
    ops.set_defaults(func=cmd_ops)

    add_sql_commands(sub)
    add_serve_command(sub)
    add_engine_commands(sub)
    return parser


def one_line(error: BaseException) -> str:
    text = _ANSI.sub("", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _stop_ray() -> bool:
    """Stop this process's Ray, if it started one; whether it did."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        # Errors a user can fix (recipe, parameter, input): one line, no traceback.
        print(f"sluice: error: {one_line(e)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt as e:
        stopped = "; Ray stopped" if _stop_ray() else ""
        print(f"sluice: interrupted{stopped}" + (f"; {e}" if str(e) else ""), file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
