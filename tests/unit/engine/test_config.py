import pytest

from server.engine.config import EngineConfig


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="n_slots"):
        EngineConfig(model_path="m.gguf", n_slots=0).validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kv_cache_type"):
        EngineConfig(model_path="m.gguf", kv_cache_type="q5").validate()  # type: ignore[arg-type]
