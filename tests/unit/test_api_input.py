"""The API's input checks as plain functions: same-origin writes, action bodies, green-wave parameters."""

from __future__ import annotations

import pytest

from streams.api_input import ApiError, check_write_origin, parse_action_body, parse_depart

JSON = "application/json; charset=utf-8"


@pytest.mark.parametrize(
    ("origin", "host", "schemes"),
    [
        (None, "127.0.0.1:6066", {"http"}),  # curl, scripts
        ("http://127.0.0.1:6066", "127.0.0.1:6066", {"http"}),
        ("http://LOCALHOST", "localhost:80", {"http"}),  # default port, case
        ("https://console.city.example", "console.city.example", {"http", "https"}),  # TLS proxy (X-Forwarded-Proto)
        ("http://[::1]:6066", "[::1]:6066", {"http"}),
    ],
)
def test_same_origin_json_passes(origin: str | None, host: str, schemes: set[str]) -> None:
    check_write_origin(JSON, origin, None, host, schemes)


@pytest.mark.parametrize(
    ("content_type", "origin", "fetch_site", "status"),
    [
        ("text/plain", "http://127.0.0.1:6066", None, 415),
        (None, None, None, 415),
        ("application/x-www-form-urlencoded", None, None, 415),
        (JSON, "http://evil.example", None, 403),
        (JSON, "null", None, 403),
        (JSON, "https://127.0.0.1:6066", None, 403),  # scheme differs
        (JSON, "http://127.0.0.1:6067", None, 403),
        (JSON, "http://127.0.0.1:6066.evil.example", None, 403),
        (JSON, "file://", None, 403),
        (JSON, None, "cross-site", 403),
        (JSON, None, "same-site", 403),
    ],
)
def test_foreign_or_non_json_writes_refused(
    content_type: str | None, origin: str | None, fetch_site: str | None, status: int
) -> None:
    with pytest.raises(ApiError) as err:
        check_write_origin(content_type, origin, fetch_site, "127.0.0.1:6066", {"http"})
    assert err.value.status == status and err.value.reason


def test_action_body() -> None:
    assert parse_action_body(b"").note == ""
    body = parse_action_body(b'{"note": "tow truck", "operator": " Li "}')
    assert body.note == "tow truck" and body.claimed_operator == "Li"
    for raw in (b'{"note": ', b"[]", b'"x"', b'{"note": 1}', b'{"x": 1}', b'{"operator": "' + b"o" * 65 + b'"}'):
        with pytest.raises(ApiError) as err:
            parse_action_body(raw)
        assert err.value.status == 400
    with pytest.raises(ApiError) as err:
        parse_action_body(b" " * 20_000)
    assert err.value.status == 413


def test_depart() -> None:
    assert parse_depart(None, 1.7e9) == 1.7e9
    assert parse_depart("1736146800.5", 0) == 1736146800.5
    for bad in ("nan", "inf", "-Infinity", "1e308", "0", "1_736_146_800", "0x67", " 1736146800", "1e3000"):
        with pytest.raises(ApiError) as err:
            parse_depart(bad, 0)
        assert err.value.status == 400 and "depart" in err.value.reason
