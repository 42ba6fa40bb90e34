import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from aicrush.config import (
    PRESETS,
    AicrushConfig,
    ConfigError,
    build_config,
    config_from_dict,
    load_config,
)
from aicrush.state import state_dir

CONFS = Path(__file__).resolve().parents[1] / "confs"


def test_default_is_tiny_preset():
    cfg = build_config()
    assert cfg.preset == "tiny"
    assert cfg.train.base_model == ""
    assert cfg.ingest.sources == ()


def test_minilm_preset_uses_packaged_model():
    assert build_config(preset="minilm").train.base_model == "minilm"


def test_user_values_override_preset_and_sources_override_file():
    cfg = load_config(CONFS / "valid" / "own_folder.yaml", sources=["/data/x"])
    assert cfg.preset == "minilm"
    # The file does not set train.*, so the preset's value comes through untouched.
    assert cfg.train.learning_rate == PRESETS["minilm"]["train"]["learning_rate"]
    assert cfg.train.learning_rate != build_config(preset="tiny").train.learning_rate
    assert cfg.evaluate.promotion_margin == 0.01  # from the file
    assert cfg.ingest.sources == ("/data/x",)  # --source wins
    assert cfg.ingest.extra_extensions == {".tpl": "Jinja"}


def test_round_trip_through_pipeline_parameter():
    cfg = build_config(preset="minilm", sources=["gs://b/p"])
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert "validate" in cfg.to_dict()  # the YAML key, not the Python attribute name


def test_config_is_frozen():
    cfg = build_config()
    with pytest.raises(ValidationError):
        cfg.train.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("unknown_key.yaml", "train.epocs: unknown key"),
        ("bad_type.yaml", "train.batch_size"),
        ("bad_choice.yaml", "validate.small_class_action"),
        ("fractions.yaml", "val_fraction + validate.test_fraction must be below 0.8"),
        ("not_mapping.yaml", "must hold a mapping"),
        ("heads.yaml", "hidden_size must be divisible by train.num_heads"),
        ("duplicate_key.yaml", "key train.epochs appears twice"),
        ("extension_without_dot.yaml", "ingest.extra_extensions: key 'tpl' has no leading dot"),
    ],
)
def test_invalid_configs_name_the_key(name: str, message: str):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace(".", r"\.")):
        load_config(CONFS / "invalid" / name)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="tiny, small, minilm, custom"):
        build_config(preset="huge")


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/aicrush.yaml")


def test_state_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AICRUSH_HOME", str(tmp_path / "env"))
    assert state_dir() == (tmp_path / "env").resolve()
    assert state_dir(tmp_path / "flag") == (tmp_path / "flag").resolve()
    assert (tmp_path / "flag").is_dir()


def test_model_is_strict_about_extra_top_level_keys():
    with pytest.raises(ConfigError, match="trian: unknown key"):
        build_config({"trian": {}})
    assert isinstance(build_config(), AicrushConfig)


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_config_never_holds_a_null_kfp_cannot_encode(preset, tmp_path):
    """The config travels as a KFP pipeline parameter; KFP's compiler refuses None anywhere in it
    (a `baseline_margin: null` once broke every `aicrush run`). The gate switched off compiles."""
    from pipelines.compile import compile_pipeline

    cfg = build_config({"evaluate": {"min_macro_f1": 0.0, "baseline_gate": False}}, preset=preset)
    assert None not in list(_leaves(cfg.to_dict()))
    assert compile_pipeline("training", tmp_path / "p.yaml", cfg).is_file()


@pytest.mark.parametrize("max_length", [16, 17])
def test_mlm_with_a_max_length_too_short_to_chunk_is_a_config_error(max_length):
    """It used to pass the config and fail the train step (after ingest, validation and
    features, retried train_retries times) with the same message."""
    with pytest.raises(ConfigError, match=r"train\.max_length .* train\.mlm_epochs"):
        build_config({"train": {"mlm_epochs": 0.5, "max_length": max_length}})
    assert build_config({"train": {"mlm_epochs": 0.5, "max_length": 18}}).train.max_length == 18
    assert build_config({"train": {"max_length": max_length}}).train.max_length == max_length


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize(
    "key", [("train", "mlm_epochs"), ("train", "epochs"), ("evaluate", "baseline_margin")]
)
def test_inf_and_nan_are_config_errors_naming_the_key(key, value):
    """YAML `.inf` passed validation and broke `aicrush run` with a KFP traceback (the config
    travels as JSON, where inf becomes null)."""
    section, name = key
    with pytest.raises(ConfigError, match=rf"{section}\.{name}"):
        build_config({section: {name: value}})


def _float_keys(model: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every float setting under ``model``, as key paths (nested sections followed)."""
    from pydantic import BaseModel

    keys: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _float_keys(ann, (*prefix, field.alias or name))
        elif ann is float or ann == float | None:
            keys.append((*prefix, field.alias or name))
    return keys


def test_no_float_setting_of_any_section_takes_inf():
    """The whole kind: rollout.interval_s took `.inf` (its section had its own base class
    without allow_inf_nan=False) and went into the KFP config as null."""
    from aicrush.config import AicrushConfig

    keys = _float_keys(AicrushConfig)
    assert ("rollout", "interval_s") in keys and len(keys) > 10
    for key in keys:
        doc: dict = {}
        node = doc
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = float("inf")
        with pytest.raises(ConfigError, match=re.escape(".".join(key))):
            build_config(doc)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # The later value used to win silently.
        (
            b"train:\n  epochs: 1\n  batch_size: 8\n  epochs: 3\n",
            "key train.epochs appears twice (lines 2 and 4)",
        ),
        (b"train: {}\nvalidate: {}\ntrain: {}\n", "key train appears twice (lines 1 and 3)"),
        (
            b"ingest:\n  extra_extensions:\n    .h: C\n    .h: C++\n",
            r"key ingest.extra_extensions['.h'] appears twice (lines 3 and 4)",
        ),
        # A file saved as Latin-1 / UTF-16 used to crash with UnicodeDecodeError.
        (
            b"train:\n  epochs: 1\n# caf\xe9\n",
            "is not UTF-8 text (byte 0xe9 on line 3); save it as UTF-8",
        ),
        ("train:\n  epochs: 1\n".encode("utf-16"), "is not UTF-8 text (byte 0xff on line 1)"),
    ],
)
def test_unreadable_or_ambiguous_config_files_name_the_file_and_the_fix(
    tmp_path: Path, content: bytes, message: str
):
    path = tmp_path / "aicrush.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_yaml_features_that_repeat_no_key_still_load(tmp_path: Path):
    """Anchors, aliases and merge keys are not duplicates; a byte order mark is fine."""
    path = tmp_path / "aicrush.yaml"
    # A merge key ("<<") whose values a key of the same mapping overrides, as YAML intends.
    path.write_bytes("\ufefftrain:\n  <<: {epochs: 1.0, batch_size: 4}\n  epochs: 2.0\n".encode())
    cfg = load_config(path)
    assert (cfg.train.epochs, cfg.train.batch_size) == (2.0, 4)


def test_a_folder_as_config_file_says_it_is_a_folder(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"is a folder; pass the YAML file in it") as err:
        load_config(tmp_path)
    assert "not found" not in str(err.value)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "tpl",
            "key 'tpl' has no leading dot, so it would match only files named exactly 'tpl'; write '.tpl'",
        ),
        ("py", "write '.py' for the extension"),
        ("c++", "write '.c++' for the extension"),
        ("src/Makefile", "only a file's name is matched, not its folder; write 'Makefile'"),
        (".", "names no extension or file name"),
        (" .py", "names no extension or file name"),
    ],
)
def test_extra_extensions_keys_are_checked(key: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        build_config({"ingest": {"extra_extensions": {key: "Jinja"}}})
    assert "ingest.extra_extensions: key " in str(err.value)


def test_extra_extensions_file_names_and_dotted_keys_pass():
    table = {".tpl": "Jinja", ".cmake.in": "CMake", "Jenkinsfile": "Groovy", "makefile": "Make"}
    assert build_config({"ingest": {"extra_extensions": table}}).ingest.extra_extensions == table
    with pytest.raises(ConfigError, match=r"'.PY' and '.py' are the same extension"):
        build_config({"ingest": {"extra_extensions": {".py": "A", ".PY": "B"}}})


def test_the_cli_prints_config_file_errors_without_a_traceback(tmp_path: Path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    (tmp_path / "latin1.yaml").write_bytes(b"preset: tiny # caf\xe9\n")
    for config, message in ((tmp_path, "is a folder"), (tmp_path / "latin1.yaml", "not UTF-8")):
        result = CliRunner().invoke(app, ["run", "--config", str(config)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (" ", "key '.py': value ' ' is blank"),  # it became a class named ' '
        ("\t", "key '.py': value '\\t' is blank"),
        (" Python", "key '.py': value ' Python' has leading or trailing spaces"),
        ("Python ", "key '.py': value 'Python ' has leading or trailing spaces"),
    ],
)
def test_extra_extensions_values_are_a_language_or_exactly_empty(value: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        build_config({"ingest": {"extra_extensions": {".py": value}}})
    assert "ingest.extra_extensions: " in str(err.value)
    assert "write a language name such as 'Python', or '' to ignore" in str(err.value)
    assert build_config({"ingest": {"extra_extensions": {".py": ""}}}).ingest.extra_extensions


@pytest.mark.parametrize(
    ("key", "fix"),
    [
        ("*.py", "; write '.py'"),
        ("?", ""),
        ("[ch]", ""),
        ("test_*.py", ""),
        ("*.tar.gz", "; write '.tar.gz'"),
    ],
)
def test_extra_extensions_keys_that_are_patterns_fail(key: str, fix: str):
    """A glob key never matched anything (keys are compared as names and suffixes)."""
    with pytest.raises(ConfigError) as err:
        build_config({"ingest": {"extra_extensions": {key: "Python"}}})
    assert (
        f"ingest.extra_extensions: key {key!r} is a pattern: a key is an extension ('.py') or an "
        "exact file name ('Jenkinsfile'), not a pattern" + fix
    ) in str(err.value)


@pytest.mark.parametrize(
    ("data", "location"),
    [
        # It read ingest.extra_extensions..py.
        ({"ingest": {"extra_extensions": {".py": 5}}}, "ingest.extra_extensions['.py']: "),
        (
            {"ingest": {"extra_extensions": {".cmake.in": 5}}},
            "ingest.extra_extensions['.cmake.in']: ",
        ),
        (
            {"ingest": {"extra_extensions": {"Jenkinsfile": 5}}},
            "ingest.extra_extensions.Jenkinsfile: ",
        ),
        ({"ingest": {"sources": ["a", 5]}}, "ingest.sources[1]: "),
        ({"train": {"epochs": "many"}}, "train.epochs: "),
    ],
)
def test_error_locations_read_as_written(data: dict, location: str):
    with pytest.raises(ConfigError) as err:
        build_config(data)
    assert str(err.value).startswith(f"invalid aicrush config:\n  {location}")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("train:\n  epochs: -3\n", "invalid aicrush config {path}:\n  train.epochs: "),
        ("train:\n  bogus: 1\n", "invalid aicrush config {path}:\n  train.bogus: unknown key"),
        ("preset: huge\n", "config file {path}: unknown preset 'huge'"),
    ],
)
def test_a_config_file_that_does_not_validate_is_named(tmp_path: Path, text: str, says: str):
    from aicrush.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(says.format(path=path)), str(err.value)
