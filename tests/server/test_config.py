from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from server.config import ENVIRONMENT, ConfigError, ModelConfig, Settings, load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_and_model_field_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`{name}`" in text, f"docs/configuration.md does not document the setting {name}"
    for variable in ENVIRONMENT:
        assert f"`{variable}`" in text, f"docs/configuration.md does not name {variable}"
    for name in ModelConfig.model_fields:
        assert re.search(rf"^\| `{name}` \|", text, re.M), f"model field {name} is not documented"


def test_environment_overrides_stored_values(tmp_path: Path) -> None:
    env = {"AISP_DATA_DIR": str(tmp_path), "AISP_PORT": "9999"}
    settings = load_settings(environ=env, stored={"port": 8123, "lan": True})
    assert settings.port == 9999
    assert settings.lan is True
    assert settings.data_dir == tmp_path


def test_unsafe_or_invalid_values_are_refused(tmp_path: Path) -> None:
    env = {"AISP_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="port"):
        load_settings(environ={**env, "AISP_PORT": "70000"})
    with pytest.raises(ConfigError, match="loopback"):
        load_settings(environ={**env, "AISP_HOST": "192.168.1.5"})
    with pytest.raises(ConfigError, match="host"):
        load_settings(environ={**env, "AISP_HOST": "example.com"})


def test_model_table_from_a_file(tmp_path: Path) -> None:
    table = tmp_path / "models.json"
    table.write_text(
        json.dumps(
            [
                {"name": "a", "kind": "chat", "engine": "fake"},
                {"name": "a", "kind": "embedding", "engine": "fake"},
            ]
        )
    )
    with pytest.raises(ConfigError, match="unique"):
        load_settings(environ={"AISP_DATA_DIR": str(tmp_path), "AISP_MODELS": str(table)})
    table.write_text(json.dumps([{"name": "e", "kind": "chat", "engine": "sentence-transformers"}]))
    with pytest.raises(ConfigError, match="embedding models only"):
        load_settings(environ={"AISP_DATA_DIR": str(tmp_path), "AISP_MODELS": str(table)})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(environ={"AISP_DATA_DIR": str(tmp_path), "AISP_MODELS": str(tmp_path / "missing.json")})


def test_default_models_come_from_installed_packages() -> None:
    settings = Settings()
    chat, embed = settings.models
    assert (
        chat.name == "smollm2-135m-instruct" and chat.source.endswith(".gguf") and Path(chat.source).is_file()
    )
    assert embed.name == "all-minilm-l6-v2" and (Path(embed.source) / "modules.json").is_file()


def test_embedding_prompts_sizes_and_precision_are_validated_strictly() -> None:
    embedder: dict[str, object] = {
        "name": "e",
        "kind": "embedding",
        "engine": "sentence-transformers",
        "source": "/models/e",
    }
    model = ModelConfig.model_validate(
        {**embedder, "prompts": {"query": "q: "}, "matryoshka_dimensions": [128, 768, 256]}
    )
    assert model.matryoshka_dimensions == (768, 256, 128)  # largest first
    assert ModelConfig.model_validate_json(model.model_dump_json()) == model  # as the model table stores it
    refused: list[tuple[dict[str, object], str]] = [
        ({"prompts": {"passage": "p: "}}, "prompts.passage"),
        ({"prompts": {"query": "x" * 1025}}, "at most 1024"),
        ({"default_input_type": "passage"}, "default_input_type"),
        ({"matryoshka_dimensions": [256, 256]}, "listed once"),
        ({"matryoshka_dimensions": [0]}, "greater than or equal to 1"),
        ({"matryoshka_dimensions": list(range(1, 34))}, "at most 32"),
        ({"dtype": "float64"}, "dtype"),
        (
            {"engine": "upstream", "source": "http://gpu:8000/v1", "prompts": {"query": "q: "}},
            "sentence-transformers",
        ),
        ({"engine": "fake", "dtype": "bfloat16"}, "dtype is a setting of the sentence-transformers engine"),
    ]
    for change, message in refused:
        with pytest.raises(ValueError, match=re.escape(message)):
            ModelConfig.model_validate({**embedder, **change})
    chat = {"name": "c", "kind": "chat", "engine": "llama.cpp"}
    with pytest.raises(ValueError, match="embedding models"):
        ModelConfig.model_validate({**chat, "matryoshka_dimensions": [128]})
    # The test engine takes prompts and sizes, as the real one does.
    assert ModelConfig(
        name="f", kind="embedding", engine="fake", default_input_type="query"
    ).default_input_type


def test_float16_is_refused_for_embeddinggemma_by_its_name_or_its_directory() -> None:
    for name, source in (
        ("embeddinggemma-300m", "/models/anything"),
        ("retrieval", "/models/EmbeddingGemma-300m"),
    ):
        values = {"name": name, "kind": "embedding", "engine": "sentence-transformers", "source": source}
        with pytest.raises(ValueError, match="cannot run in float16: its activations do not support it"):
            ModelConfig.model_validate({**values, "dtype": "float16"})
        for dtype in ("float32", "bfloat16", None):
            assert ModelConfig.model_validate({**values, "dtype": dtype}).dtype == dtype
    other = {"name": "e5", "kind": "embedding", "engine": "sentence-transformers", "source": "/models/e5"}
    assert ModelConfig.model_validate({**other, "dtype": "float16"}).dtype == "float16"
