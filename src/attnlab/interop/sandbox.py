"""Chat templates rendered in a bounded Jinja sandbox.

A chat template comes with a model file and is as untrusted as the file. It is rendered in
jinja2's ``ImmutableSandboxedEnvironment`` (no attribute access to internals, no mutation
of the messages), with bounds that the sandbox alone does not set:

- every value a template builds (strings, lists: ``'a' * 10**10``, ``s ~ s`` doubled in a
  loop, ``'a'|center(10**10)``) is at most ``MAX_CHARS`` long, checked before it is built
  (``*``, ``+``, ``**``, ``%``, ``~``, joins, ``str.replace``, integer arguments of filters
  and calls, format widths) and again after every filter and call; the rendered text too;
- at most ``MAX_STEPS`` template lines run (nested ``range`` loops end instead of hanging);
- the ``loopcontrols`` extension is on: ``{% break %}`` and ``{% continue %}`` work.

Any failure (a template error, ``raise_exception``, a division by zero, a bound) is one
``ValueError`` naming the template's source.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["MAX_CHARS", "MAX_STEPS", "TemplateLimitError", "render_template"]

MAX_CHARS = 1_000_000  # the longest string or list a template may build, and its output
MAX_STEPS = 1_000_000  # template lines run in one rendering
_MAX_POWER_BITS = 4096
# a width or precision of 100000 or more, in a '%' format and in a str.format field
_PERCENT_WIDTH = re.compile(r"%[#0 +\-]*\d*\.?\d{6,}")
_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*\d{6,}[^{}]*\}")


class TemplateLimitError(ValueError):
    """A chat template went past one of the sandbox's bounds."""


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict)) else 0


def _check_size(value: Any, what: str) -> Any:
    if _size(value) > MAX_CHARS:
        raise TemplateLimitError(f"{what} builds a value of {_size(value)} items (max {MAX_CHARS})")
    return value


def _check_number(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CHARS:
        raise TemplateLimitError(f"{what} takes the number {value} (max {MAX_CHARS})")


def _checked(func: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``func`` (a filter or test), refusing integer arguments above ``MAX_CHARS`` (a
    width, a count: not the value filtered, which may be any number) and results longer
    than ``MAX_CHARS``."""

    @functools.wraps(func)  # keeps jinja's pass_context / pass_environment marks
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for index, arg in enumerate((*args, *kwargs.values())):
            if index or not isinstance(arg, int):  # the value itself is not checked
                _check_number(arg, what)
            _joined_size(arg, what)  # join, sum, ... over a list of long strings
        return _check_size(func(*args, **kwargs), what)

    return wrapper


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with size checks on the operators and calls that build big
    values (see the module's docstring)."""

    intercepted_binops = frozenset(["*", "+", "**", "%"])

    def __init__(self, **options: Any) -> None:
        options.setdefault("extensions", []).append("jinja2.ext.loopcontrols")
        super().__init__(**options)
        self.filters = {k: _checked(f, f"filter {k!r}") for k, f in self.filters.items()}
        self.tests = {k: _checked(f, f"test {k!r}") for k, f in self.tests.items()}
        self.concat = _bounded_join("".join)  # type: ignore[method-assign]

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) and isinstance(n, int) and _size(seq) * n > MAX_CHARS:
                    raise TemplateLimitError(
                        f"'*' would build a value of {_size(seq) * n} items (max {MAX_CHARS})"
                    )
        elif operator == "+" and _size(left) + _size(right) > MAX_CHARS:
            raise TemplateLimitError(f"'+' would build a value longer than {MAX_CHARS}")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > _MAX_POWER_BITS:
                raise TemplateLimitError(f"{left} ** {right} is a number too large")
        elif operator == "%" and isinstance(left, str):
            if _PERCENT_WIDTH.search(left):
                raise TemplateLimitError("a '%' format with a width of 100000 or more")
            for arg in right if isinstance(right, tuple) else (right,):
                _check_number(arg, "'%'")
        return _check_size(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        for arg in (*args, *kwargs.values()):
            _check_number(arg, "a call")
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if isinstance(owner, str):
            if _FORMAT_WIDTH.search(owner) or _PERCENT_WIDTH.search(owner):
                raise TemplateLimitError("a format string with a width of 100000 or more")
            method = getattr(__obj, "__name__", "")
            if method == "replace" and len(args) > 1 and all(isinstance(a, str) for a in args[:2]):
                old, new = args[0], args[1]
                count = owner.count(old) if old else len(owner) + 1
                if len(owner) + count * (len(new) - len(old)) > MAX_CHARS:
                    raise TemplateLimitError("str.replace would build a value too long")
            for arg in args:
                _joined_size(arg, f"str.{method}")
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_size(result, "a call")


class _Steps:
    """A trace function over the template's own frames that counts the lines they run."""

    def __init__(self) -> None:
        self.left = MAX_STEPS

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename != "<template>":
            return None  # other code runs untraced
        return self.line

    def line(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.left -= 1
            if self.left < 0:
                raise TemplateLimitError(f"the template ran more than {MAX_STEPS} steps")
        return self.line


def _joined_size(items: Any, what: str) -> None:
    """Refuse joining ``items`` when the result would be longer than MAX_CHARS."""
    if isinstance(items, (list, tuple)):
        total = sum(len(x) if isinstance(x, str) else 32 for x in items)
        if total > MAX_CHARS:
            raise TemplateLimitError(f"{what} would build a string of {total} characters")


def _bounded_join(join: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja's ``~`` and block joins (``str_join``, ``markup_join``, ``concat``), refusing
    a result longer than MAX_CHARS before it is built."""

    @functools.wraps(join)
    def wrapper(seq: Any) -> Any:
        items = list(seq)
        _joined_size(items, "'~'")
        return join(items)

    return wrapper


def _chunks(template: Any, values: dict[str, Any]) -> Iterator[str]:
    total = 0
    for chunk in template.generate(**values):
        total += len(chunk)
        if total > MAX_CHARS:
            raise TemplateLimitError(f"the rendered text is longer than {MAX_CHARS} characters")
        yield chunk


def render_template(template: str, source: str, **values: Any) -> str:
    """``template`` rendered with ``values`` in ``BoundedSandbox`` (``trim_blocks``,
    ``lstrip_blocks``, as ``transformers`` renders chat templates); every failure is one
    ``ValueError`` naming ``source``."""

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    previous = sys.gettrace()
    try:
        compiled = env.from_string(template)
        namespace = compiled.root_render_func.__globals__  # the template module's globals
        for name in ("str_join", "markup_join"):
            namespace[name] = _bounded_join(namespace[name])
        sys.settrace(_Steps())
        return "".join(_chunks(compiled, values))
    except (Exception, RecursionError) as err:  # noqa: BLE001 - a template can raise anything
        lines = str(err).strip().splitlines()
        reason = lines[0] if lines else type(err).__name__
        if not isinstance(err, (TemplateError, TemplateLimitError)):
            reason = f"{type(err).__name__}: {reason}"
        raise ValueError(f"{source}: the chat template failed: {reason}") from None
    finally:
        sys.settrace(previous)
