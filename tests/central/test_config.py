"""Central's settings: flags > ``REG_*`` environment > config file > defaults, each layer checked,
and a bad value anywhere refused with a message naming the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelreg.central.config import CentralConfig, ConfigError, load


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "central.toml"
    path.write_text(text)
    return path


class TestPrecedence:
    def test_defaults_without_anything(self) -> None:
        """No flag, variable or file: the dataclass defaults."""
        assert CentralConfig() == load({}, environ={})

    def test_file_over_defaults(self, tmp_path: Path) -> None:
        """A TOML file sets values of every kind (path, text, number, bool, list)."""
        path = _toml(
            tmp_path,
            'data-dir = "/srv/reg"\nlisten = "127.0.0.1:9001"\nheartbeat_interval_s = 0\n'
            'four_eyes = false\nprotected_aliases = ["production", "prod-eu"]\n',
        )
        config = load({}, environ={}, config_file=path)
        expected = (Path("/srv/reg"), "127.0.0.1:9001", 0.0, False, ("production", "prod-eu"))
        actual = (
            config.data_dir,
            config.listen,
            config.heartbeat_interval_s,
            config.four_eyes,
            config.protected_aliases,
        )
        assert expected == actual

    def test_environment_over_file_and_flags_over_environment(self, tmp_path: Path) -> None:
        """REG_* beats the file; a flag beats both; a flag given as None does not count."""
        path = tmp_path / "central.json"
        path.write_text(json.dumps({"listen": "127.0.0.1:1", "sync_interval_s": 3, "force": True}))
        environ = {"REG_LISTEN": "127.0.0.1:2", "REG_SYNC_INTERVAL_S": "0.5", "REG_FORCE": "no"}
        config = load(
            {"listen": "127.0.0.1:3", "sync_interval_s": None}, environ=environ, config_file=path
        )
        expected = ("127.0.0.1:3", 0.5, False)
        assert expected == (config.listen, config.sync_interval_s, config.force)

    def test_comma_separated_list_from_the_environment(self) -> None:
        """REG_PROTECTED_ALIASES is a comma-separated list."""
        config = load({}, environ={"REG_PROTECTED_ALIASES": "production, prod-eu,"})
        assert ("production", "prod-eu") == config.protected_aliases


class TestBadSettings:
    @pytest.mark.parametrize(
        ("environ", "message"),
        [
            ({"REG_FOUR_EYES": "maybe"}, "setting four_eyes: invalid value 'maybe'"),
            ({"REG_SYNC_INTERVAL_S": "-1"}, "setting sync_interval_s: invalid value '-1'"),
            ({"REG_MAX_BODY_BYTES": "0"}, "setting max_body_bytes: invalid value '0'"),
            ({"REG_LISTEN": "nowhere"}, "setting listen: expected host:port, got 'nowhere'"),
        ],
    )
    def test_bad_environment_value(self, environ: dict[str, str], message: str) -> None:
        """A value that cannot be used is a ConfigError naming the setting."""
        with pytest.raises(ConfigError) as caught:
            load({}, environ=environ)
        assert message == str(caught.value)

    def test_unknown_setting_in_the_file(self, tmp_path: Path) -> None:
        """A misspelt setting in the file is refused, not ignored."""
        path = _toml(tmp_path, "four_eye = false\n")
        with pytest.raises(ConfigError, match="unknown setting 'four_eye'"):
            load({}, environ={}, config_file=path)

    def test_file_that_is_not_toml(self, tmp_path: Path) -> None:
        """A file that does not parse is refused with its name."""
        path = _toml(tmp_path, "[x\n")
        with pytest.raises(ConfigError, match=r"config file .*central.toml is not valid"):
            load({}, environ={}, config_file=path)
