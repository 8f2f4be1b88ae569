"""Parsing of ``reg``'s repeated ``KEY=VALUE`` options and ``--expected``: properties."""

from __future__ import annotations

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelreg.central.client import UNSET
from modelreg.cli.aliases import ExpectedVersion
from modelreg.cli.context import KEY_NUMBER, KEY_VALUE

KEYS = st.text(min_size=1).filter(lambda k: "=" not in k and k.strip() != "")


class TestKeyValue:
    @given(key=KEYS, value=st.text())
    def test_round_trips_any_key_and_value(self, key: str, value: str) -> None:
        """``k=v`` parses to the stripped key and the value exactly (``=`` allowed in it)."""
        assert (key.strip(), value) == KEY_VALUE.convert(f"{key}={value}", None, None)

    @pytest.mark.parametrize("raw", ["novalue", "=v", " =v", ""])
    def test_without_a_key_fails(self, raw: str) -> None:
        """A missing ``=`` or an empty key is a usage error."""
        with pytest.raises(click.BadParameter):
            KEY_VALUE.convert(raw, None, None)


class TestKeyNumber:
    @given(number=st.floats(allow_nan=False, allow_infinity=False))
    def test_round_trips_finite_floats(self, number: float) -> None:
        """The repr of any finite float parses back to the same float."""
        assert ("m", number) == KEY_NUMBER.convert(f"m={number!r}", None, None)

    @given(number=st.integers())
    def test_integers_stay_integers(self, number: int) -> None:
        """An integer metric is sent as an integer."""
        parsed = KEY_NUMBER.convert(f"m={number}", None, None)
        assert (int, number) == (type(parsed[1]), parsed[1])

    @pytest.mark.parametrize("raw", ["m=high", "m=nan", "m=inf", "m=-1e999", "m="])
    def test_non_finite_or_non_numbers_fail(self, raw: str) -> None:
        """Anything that is not a finite number is a usage error."""
        with pytest.raises(click.BadParameter):
            KEY_NUMBER.convert(raw, None, None)


class TestExpectedVersion:
    @pytest.mark.parametrize(
        ("raw", "expected"), [("any", UNSET), ("none", None), ("NONE", None), ("7", 7)]
    )
    def test_values(self, raw: str, expected: object) -> None:
        """``any`` means no check, ``none`` unset, a number that version."""
        assert expected == ExpectedVersion().convert(raw, None, None)

    @pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5", ""])
    def test_other_values_fail(self, raw: str) -> None:
        """Anything else is a usage error."""
        with pytest.raises(click.BadParameter):
            ExpectedVersion().convert(raw, None, None)
