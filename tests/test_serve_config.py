"""`sluice serve` config: every mistake a user can fix is one line at file:line:column."""

import pytest

from sluice.operators.recipe import RecipeError
from sluice.serving.cli import main
from sluice.serving.serve_config import load_serve_config


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "shop.duckdb").write_bytes(b"")
    (tmp_path / "keys.txt").write_text("# tenant=key\nalice=key-alice-1\nbob=key-bob-1\n")
    return tmp_path


def write(folder, text: str):
    path = folder / "serve.yaml"
    path.write_text(text)
    return path


GOOD = """\
model: {path: model, name: tiny}
engine:
  dtype: float32
  max_model_len: 512
schedule: {policy: edf, max_inflight_seqs: 4}
databases:
  shop: shop.duckdb
auth: {keys_file: keys.txt}
limits: {max_queue: 16}
slo: {sql_ask_ms: 5000}
text2sql: {candidates: 2, cache_dir: cache}
"""


def test_a_good_config_is_read_with_paths_relative_to_it(folder):
    c = load_serve_config(write(folder, GOOD))
    assert c.model_name == "tiny" and c.engine.model == str(folder / "model")
    assert c.engine.max_model_len == 512 and c.schedule.policy.name == "edf"
    assert c.schedule.max_inflight_seqs == 4
    assert c.databases == {"shop": folder / "shop.duckdb"}
    assert c.keys == {"key-alice-1": "alice", "key-bob-1": "bob"}
    assert c.limits.max_queue == 16 and c.limits.max_body_bytes == 1 << 20
    assert c.text2sql.candidates == 2 and c.text2sql.slo_s == 5.0
    assert c.text2sql.cache_dir == str(folder / "cache") and c.rewrite.cache_dir is None


def test_replicas_from_the_config_and_the_command_line(folder, capsys):
    c = load_serve_config(write(folder, "model: {path: model}\nreplicas: {count: 3, alpha: 0.8}\n"))
    assert c.replicas.count == 3 and c.replicas.on_ray and c.replicas.alpha == 0.8
    path = write(folder, "model: {path: model}\n")
    assert not load_serve_config(path).replicas.on_ray
    assert load_serve_config(path).schedule.max_inflight_seqs == "auto"
    assert main(["serve", "--config", str(path), "--replicas", "0"]) == 2
    assert capsys.readouterr().err.strip() == "sluice: error: replicas: count must be at least 1, got 0"


def test_keys_from_the_environment(folder, monkeypatch):
    monkeypatch.setenv("SERVE_KEYS", "alice=k1, bob=k2")
    c = load_serve_config(write(folder, "model: {path: model}\nauth: {keys_env: SERVE_KEYS}\n"))
    assert c.keys == {"k1": "alice", "k2": "bob"} and c.model_name == "model"


@pytest.mark.parametrize("text, where, message", [
    ("model: {path: model}\nengin: {}\n", "2:1", "unknown section 'engin'; did you mean 'engine'?"),
    ("model: {path: model}\nengine:\n  max_model_len: lots\n", "3:18", "engine.max_model_len must be int"),
    ("model: {path: model}\nengine:\n  max_model_lenn: 5\n", "3:3", "unknown engine setting 'max_model_lenn'"),
    ("model: {path: model}\nengine: {block_size: 20}\n", "2:9", "block_size must be a multiple of 16"),
    ("model: {name: x}\n", "1:8", "model.path is required"),
    ("model: {path: model}\nschedule: {policy: lifo}\n", "2:20", "schedule.policy must be one of"),
    ("model: {path: model}\ndatabases:\n  shop: nowhere.duckdb\n", "3:9", "no such DuckDB file"),
    ("model: {path: model}\ndatabases:\n  'a/b': shop.duckdb\n", "3:3", "may use only letters"),
    ("model: {path: model}\nauth: {keys_env: NO_SUCH_SLUICE_VAR}\n", "2:18", "is not set"),
    ("model: {path: model}\nauth: {keys_file: nokeys.txt}\n", "2:19", "no such file"),
    ("model: {path: model}\nlimits: {max_queue: -1}\n", "2:21", "limits.max_queue must be positive"),
    ("model: {path: model}\nslo: {completion_ms: true}\n", "2:22", "slo.completion_ms must be float"),
    ("model: {path: model}\ntext2sql: {slo_s: 3}\n", "2:12", "unknown text2sql setting 'slo_s'"),
    ("model: [1\n", "2:1", "invalid YAML"),
    ("model: {path: model}\nreplicas: {dispatch: random}\n", "2:11", "dispatch must be one of balanced"),
    ("model: {path: model}\nreplicas: {count: 0}\n", "2:11", "count must be at least 1"),
    ("model: {path: model}\nreplicas: {alpah: 0.3}\n", "2:12", "unknown replicas setting 'alpah'; did you mean 'alpha'?"),
])
def test_mistakes_name_file_line_and_column(folder, text, where, message):
    path = write(folder, text)
    with pytest.raises(RecipeError) as e:
        load_serve_config(path)
    assert str(e.value).startswith(f"{path}:{where}: "), str(e.value)
    assert message in str(e.value)


def test_a_bad_key_entry_names_its_line_and_never_echoes_it(folder):
    (folder / "keys.txt").write_text("alice=ok-key\nthis is secret\n")
    with pytest.raises(RecipeError) as e:
        load_serve_config(write(folder, "model: {path: model}\nauth: {keys_file: keys.txt}\n"))
    assert str(e.value).startswith(f"{folder / 'keys.txt'}:2: ") and "secret" not in str(e.value)


def test_the_cli_says_it_in_one_line_with_exit_2(folder, capsys):
    path = write(folder, "model: {path: model}\nlimits: {max_body_bytes: 0}\n")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sluice: error: {path}:2:26: limits.max_body_bytes must be positive, got 0"
