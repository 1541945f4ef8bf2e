"""Chat templates run in a bounded sandbox: every failure is one ValueError naming the
template's source, big values are refused before they are built, loop controls work."""

from __future__ import annotations

import resource
import time

import pytest

from attnlab.interop.chat import render_chat
from attnlab.interop.sandbox import MAX_CHARS

MESSAGES = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "U"},
    {"role": "assistant", "content": "A"},
]


def _fails(template: str, match: str) -> str:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match) as info:
        render_chat(template, MESSAGES, source="model.gguf")
    message = str(info.value)
    assert message.startswith("model.gguf: the chat template failed: ")
    assert "\n" not in message
    assert time.perf_counter() - start < 5
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mb < 100, f"{template!r} grew the process by {grown_mb:.0f} MB"
    return message


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{{ 'a' * 10**10 }}", "'\\*' would build a value of 10000000000"),
        ("{{ 10**10 * ['a'] }}", "'\\*' would build"),
        ("{% set s = 'a' * 600000 %}{{ s + s }}", "'\\+' would build"),
        ("{{ 1 // 0 }}", "ZeroDivisionError"),
        ("{{ 1.0 / 0 }}", "ZeroDivisionError"),
        ("{% for i in range(10**10) %}{% endfor %}", "takes the number 10000000000"),
        ("{% for i in range(100001) %}{% endfor %}", "OverflowError"),
        ("{{ 'a'|center(10**10) }}", "filter 'center' takes the number"),
        ("{{ '{:>10000000000}'.format(1) }}", "width of 100000 or more"),
        ("{{ '%10000000000d' % 1 }}", "width of 100000 or more"),
        ("{{ 2 ** 100000 }}", "too large"),
        (
            "{% set s = 'a' * 1000000 %}{{ ([s] * 100)|join('') }}",
            "filter 'join' would build a string of 100000000",
        ),
        ("{% set s = 'a' * 1000000 %}{{ ''.join([s] * 100) }}", "str.join would build"),
        ("{% set s = 'a' * 2000 %}{{ s.replace('a', s) }}", "str.replace would build"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "'~' would build a string",
        ),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "more than 1000000 steps",
        ),
        ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "rendered text is longer"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "RecursionError"),
        ("{{ raise_exception('no system message') }}", "no system message"),
        ("{% for %}", "Expected an expression"),
        ("{{ messages.append(1) }}", "SecurityError|unsafe|not safely callable"),
        ("{{ ''.__class__.__mro__ }}", "undefined|unsafe|has no attribute"),
    ],
)
def test_hostile_templates_are_one_line_value_errors(template: str, match: str) -> None:
    _fails(template, match)


def test_the_errors_name_the_template_source() -> None:
    with pytest.raises(ValueError, match=r"^/models/x\.gguf: the chat template failed"):
        render_chat("{{ 1 // 0 }}", [], source="/models/x.gguf")


def test_loop_controls_work() -> None:
    template = (
        "{% for m in messages %}{% if m.role == 'user' %}{% continue %}{% endif %}"
        "{% if m.role == 'tool' %}{% break %}{% endif %}<{{ m.content }}>{% endfor %}"
    )
    assert render_chat(template, MESSAGES) == "<S><A>"
    stop = [*MESSAGES[:1], {"role": "tool", "content": "T"}, *MESSAGES[1:]]
    assert render_chat(template, stop) == "<S>"


def test_values_up_to_the_cap_still_render() -> None:
    """The bounds refuse what is too big, not ordinary work near them."""
    text = render_chat("{{ 'Today 20241207 %s' % 'x' }} {{ '{}-{:>5}'.format(1, 2) }}", [])
    assert text == "Today 20241207 x 1-    2"
    numbers = render_chat("{{ 1700000000|string }} {{ (10**12)|int }}", [])
    assert numbers == "1700000000 1000000000000"  # big values, not big sizes
    big = render_chat(f"{{{{ 'a' * {MAX_CHARS} }}}}", [])
    assert len(big) == MAX_CHARS
    loops = "{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}ok"
    assert render_chat(loops, []) == "ok"
