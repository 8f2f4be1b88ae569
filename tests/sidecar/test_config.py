"""The sidecar's configuration: flags > REG_SIDECAR_* environment > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.sidecar.config import (
    DEFAULT_SOCKET_PATH,
    SETTINGS,
    ConfigError,
    SidecarConfig,
    default_replica_url,
    load,
)


class TestLoad:
    def test_defaults(self) -> None:
        """No flags and no environment give the documented defaults."""
        config = load({}, {})
        assert SidecarConfig() == config
        assert Path(DEFAULT_SOCKET_PATH) == config.socket
        assert default_replica_url() + "/registry" == config.follow_url

    def test_flags_beat_environment(self) -> None:
        """A flag wins over its REG_SIDECAR_* variable; None flags are ignored."""
        env = {"REG_SIDECAR_STALE_AFTER_S": "5", "REG_SIDECAR_FOLLOW_INTERVAL_S": "2"}
        config = load({"stale_after_s": 9.0, "follow_interval_s": None}, env)
        assert (9.0, 2.0) == (config.stale_after_s, config.follow_interval_s)

    def test_environment_values_are_coerced(self) -> None:
        """Environment strings become paths, ints, octal modes and None."""
        env = {
            "REG_SIDECAR_SOCKET": "/run/reg.sock",
            "REG_SIDECAR_HTTP_SOCKET": "none",
            "REG_SIDECAR_HTTP_PORT": "9464",
            "REG_SIDECAR_SOCKET_MODE": "0600",
            "REG_SIDECAR_MAX_CONNECTIONS": "10",
        }
        config = load({}, env)
        expected = (Path("/run/reg.sock"), None, 9464, 0o600, 10)
        assert expected == (
            config.socket,
            config.http_socket,
            config.http_port,
            config.socket_mode,
            config.max_connections,
        )

    def test_follow_url_appends_registry(self) -> None:
        """The followed URL is <replica>/registry, keeping an S3 query string."""
        config = load({"replica_url": "s3://b/p?endpoint=http://h:9000"}, {})
        assert "s3://b/p/registry?endpoint=http://h:9000" == config.follow_url

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("follow_interval_s", "0"),
            ("stale_after_s", "-1"),
            ("http_port", "70000"),
            ("socket_mode", "999"),
            ("max_connections", "0"),
            ("idle_timeout_s", "soon"),
            ("socket", ""),
        ],
    )
    def test_bad_values_name_the_setting(self, name: str, value: str) -> None:
        """A bad value raises ConfigError naming the setting."""
        with pytest.raises(ConfigError, match=name):
            load({}, {f"REG_SIDECAR_{name.upper()}": value})

    def test_unknown_flag(self) -> None:
        """An unknown setting is refused."""
        with pytest.raises(ConfigError, match="nope"):
            load({"nope": 1}, {})

    def test_every_setting_has_help(self) -> None:
        """Each field has an environment variable and help text."""
        assert all(s.help and s.env.startswith("REG_SIDECAR_") for s in SETTINGS)
