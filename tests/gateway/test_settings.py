from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import SettingsError
from gateway.settings import Settings, load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    doc = DOC.read_text()
    assert f"| `{name}` |" in doc
    assert f"`VAULTGATE_{name.upper()}`" in doc


def test_toml_then_environment_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "vaultgate.toml").write_text("port = 2000\nmax_concurrent_turns = 2\n")
    settings = load_settings(tmp_path, env={"VAULTGATE_PORT": "3000", "VAULTGATE_FSYNC": "off"})
    assert (settings.port, settings.max_concurrent_turns, settings.fsync) == (3000, 2, False)
    assert load_settings(tmp_path, env={}, port=4000).port == 4000


def test_a_vaultgate_table_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "vaultgate.toml").write_text("[vaultgate]\ninbox_folder = 'In'\n")
    assert load_settings(tmp_path, env={}).inbox_folder == "In"


@pytest.mark.parametrize(
    ("toml", "env", "fragment"),
    [
        ("prot = 1\n", {}, "unknown setting(s): prot"),
        ("port = 'many'\n", {}, "port:"),
        ("port = [\n", {}, "not valid TOML"),
        ("", {"VAULTGATE_MAX_CONCURRENT_TURNS": "0"}, "max_concurrent_turns"),
    ],
)
def test_bad_settings_say_which_one(
    tmp_path: Path, toml: str, env: dict[str, str], fragment: str
) -> None:
    (tmp_path / "vaultgate.toml").write_text(toml)
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path, env=env)
    assert fragment in str(caught.value)
