"""A notice's content as templates: its email subject, text and HTML and its SMS text,
rendered for each recipient over ``recipient``, ``data`` (the recipient's own), ``notice``
and ``agency``, in the recipient's language (``language``, a BCP 47 tag).

The language is Liquid (python-liquid), chosen over Jinja2's sandbox because:

- it was made for templates written by people who are not the platform's programmers
  (shop owners, here platform services and managers): no attribute access into Python
  objects, nothing to import or call, and limits on loops, output and nesting built in,
  where Jinja2's sandbox starts from Python's expressions and removes what is unsafe;
- its static analysis names every variable path a template uses (``data.lots``,
  ``recipient.name``), so a template naming a variable some recipient lacks is refused
  when the notice is created (:func:`missing`), not found at the thousandth send; Jinja2's
  (``meta.find_undeclared_variables``) gives the top-level names only.

Rules a template is held to, when compiled (:func:`compile_template`), each a 422 naming
the field: it parses; it uses only the tags of :data:`TAGS` (no ``include`` or ``render``:
a template reads no file) and known filters; it names no variable outside :data:`ROOTS`.
When rendered: an undefined variable is an error (never an empty string), HTML escapes
every value (a ``data`` value cannot add markup), and a loop, the output and the nesting
are bounded (:class:`_Bounded`). In a text, the filters write plain spaces (CLDR's
no-break ones are outside GSM-7). Rendering is deterministic: the same template, values
and language give the same text (:meth:`Template.render`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from liquid import BoundTemplate, Environment, RenderContext, StrictUndefined
from liquid.exceptions import LiquidError
from liquid.filter import with_context
from liquid.output import LimitedStringIO

from relaybook.platform.decoding import InvalidRequestError

#: what a template may name, and nothing else
ROOTS = frozenset({"recipient", "data", "notice", "agency", "language"})
#: the tags a template may use: logic and text, nothing that reads another template
TAGS = frozenset(
    {
        "#",
        "assign",
        "break",
        "capture",
        "case",
        "comment",
        "continue",
        "cycle",
        "decrement",
        "doc",
        "echo",
        "for",
        "if",
        "ifchanged",
        "increment",
        "liquid",
        "raw",
        "tablerow",
        "unless",
    }
)
#: the tags that read another template (a file, for Liquid): taken out of the language
READS = ("include", "render")
#: how many paths of missing variables, and recipients for each, a refusal names
NAMED = 5


class _Bounded(Environment):
    """Liquid's limits, set: a template written by anyone renders in bounded time and
    memory."""

    loop_iteration_limit = 10_000  # iterations of all loops of one render together
    output_stream_limit = 2_000_000  # characters written by one render
    local_namespace_limit = 100_000  # the size of what assign and capture keep
    context_depth_limit = 30  # nesting of blocks


class _Output(LimitedStringIO):
    """Liquid's bounded output, keeping what is written as it is: LimitedStringIO leaves
    StringIO's universal newlines on, which made a value's ``\r\n`` and ``\r`` a ``\n``
    (python-liquid 2.3.6), and the content its hash is taken of."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit, newline="")


class _Context(RenderContext):
    def get_buffer(self, buf: Any = None) -> _Output:
        """The buffer of a ``capture`` (or ``ifchanged``): within what is left of the
        limit, as Liquid's own."""
        used = buf.size if isinstance(buf, LimitedStringIO) else 0
        return _Output(_Bounded.output_stream_limit - used)


class _Compiled(BoundTemplate):
    context_class = _Context


def _environment(*, html: bool = False, sms: bool = False) -> Environment:
    env = _Bounded(undefined=StrictUndefined, autoescape=html, strict_filters=True)
    env.template_class = _Compiled
    for tag in READS:
        del env.tags[tag]
    for name, write in (("money", money), ("number", number), ("date", date)):
        env.filters[name] = _plain_spaces(write) if sms else write
    return env


#: the no-break spaces CLDR writes in numbers and amounts (1 234,56 €): outside GSM-7, one
#: of them makes a whole text UCS-2, 70 characters a segment instead of 160
NO_BREAK = str.maketrans({"\u00a0": " ", "\u202f": " "})


def _plain_spaces(write: Any) -> Any:
    """``write`` with plain spaces in what it writes: for texts (relaybook.content.segments)."""

    @with_context
    @functools.wraps(write)
    def plain(*args: Any, **kwargs: Any) -> str:
        return str(write(*args, **kwargs)).translate(NO_BREAK)

    return plain


@dataclasses.dataclass(frozen=True)
class Template:
    """A template compiled once and rendered for each recipient."""

    field: str  # where it came from in the request: ``email.subject``, ``content.nl.sms.text``
    source: str
    #: every variable path it names outside loops' own names: ``("data", "lots")``
    paths: tuple[tuple[str | int, ...], ...]
    _compiled: Any = dataclasses.field(repr=False, compare=False)

    def render(self, values: Mapping[str, Any]) -> str:
        """The text for one recipient; ``values`` has :data:`ROOTS`. Raises
        :class:`RenderError` naming the field and what failed."""
        compiled = self._compiled
        output = _Output(_Bounded.output_stream_limit)
        try:
            compiled.render_with_context(
                compiled.context_class(compiled, globals=compiled.make_globals(values)), output
            )
            return output.getvalue()
        except LiquidError as problem:
            raise RenderError(self.field, _first_line(problem)) from None


class RenderError(ValueError):
    """A template that compiled but could not render for a recipient: a variable inside a
    loop's item missing, a limit passed, a value a filter cannot take."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def compile_template(field: str, source: str, *, html: bool = False, sms: bool = False) -> Template:
    """``source`` compiled, or a 422 naming ``field`` and why not. ``html``: every value
    escaped; ``sms``: the filters write plain spaces, not CLDR's no-break ones."""
    env = _HTML if html else _SMS if sms else _TEXT
    try:
        compiled = env.from_string(source)
        analysis = compiled.analyze()
    except LiquidError as problem:
        raise InvalidRequestError(
            field, f"is not a valid template: {_first_line(problem)}"
        ) from None
    unknown_filters = sorted(set(analysis.filters) - set(env.filters))
    if unknown_filters:
        raise InvalidRequestError(field, f"uses an unknown filter: {unknown_filters[0]}")
    refused_tags = sorted(set(analysis.tags) - TAGS)
    if refused_tags:
        raise InvalidRequestError(field, f"uses a tag templates may not use: {refused_tags[0]}")
    roots = sorted(set(analysis.globals) - ROOTS)
    if roots:
        raise InvalidRequestError(
            field, f"names {roots[0]!r}: a template may name only {', '.join(sorted(ROOTS))}"
        )
    paths = tuple(
        dict.fromkeys(
            _known(variable.segments)
            for variables in analysis.globals.values()
            for variable in variables
        )
    )
    return Template(field, source, paths, compiled)


def _known(segments: Sequence[object]) -> tuple[str | int, ...]:
    """A variable's path up to its first index known only at render (``data[lot.key]``)."""
    known: list[str | int] = []
    for segment in segments:
        if not isinstance(segment, str | int):
            break
        known.append(segment)
    return tuple(known)


def missing(
    templates: Iterable[Template], recipients: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[tuple[str, list[str]]]:
    """The variable paths of ``data`` (``data.amount``) that some recipients lack, with the
    first :data:`NAMED` of those recipients' ids; at most :data:`NAMED` paths, in the
    order the templates name them. ``recipients``: (id, data) in the request's order. A
    path present with a null value is present: a template tests it with ``if``."""
    wanted = dict.fromkeys(
        path[1:] for template in templates for path in template.paths if path[0] == "data"
    )
    found = []
    for path in wanted:
        lacking = [rid for rid, data in recipients if not _has(data, path)]
        if lacking:
            found.append((_dotted(("data", *path)), lacking[:NAMED]))
            if len(found) == NAMED:
                break
    return found


def _has(value: Any, path: tuple[str | int, ...]) -> bool:
    for segment in path:
        if isinstance(value, Mapping) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and isinstance(segment, int):
            if not -len(value) <= segment < len(value):
                return False
            value = value[segment]
        else:  # Liquid's own properties of an array or a hash need no key
            return isinstance(value, Mapping | list) and segment in ("size", "first", "last")
    return True


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        elif segment.isidentifier():
            out += f".{segment}" if out else segment
        else:
            out += f"[{segment!r}]"
    return out


def _first_line(problem: Exception) -> str:
    return (str(problem).strip().splitlines() or [type(problem).__name__])[0]


# --- locale-aware filters (Babel): the locale is the recipient's language


@functools.lru_cache(maxsize=256)
def locale_of(language: str) -> Locale:
    """The Babel locale of a BCP 47 tag (``nl-BE``); English if Babel has no such locale
    (a tag the API accepts is well formed, not necessarily one CLDR knows)."""
    try:
        return Locale.parse(language, sep="-")
    except (UnknownLocaleError, ValueError):
        return Locale("en")


def _locale(context: Any) -> Locale:
    return locale_of(str(context.resolve("language")))


def _number(value: Any, name: str) -> decimal.Decimal:
    if isinstance(value, bool):
        raise LiquidError(f"{name} expects a number, got {value!r}", token=None)
    try:
        return decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        raise LiquidError(f"{name} expects a number, got {value!r}", token=None) from None


@with_context
def money(value: Any, currency: str = "EUR", *, context: Any) -> str:
    """``{{ data.amount | money }}``: 1 234,56 € in fr, € 1.234,56 in nl-BE; the currency
    an ISO 4217 code (EUR by default). The amount as given (a string keeps its cents)."""
    return str(format_currency(_number(value, "money"), currency, locale=_locale(context)))


@with_context
def number(value: Any, *, context: Any) -> str:
    """``{{ data.share | number }}``: 1 234,5 in fr, 1.234,5 in nl."""
    return str(format_decimal(_number(value, "number"), locale=_locale(context)))


@with_context
def date(value: Any, format: str = "long", *, context: Any) -> str:
    """``{{ data.due | date }}``: an ISO date (``2026-12-31``), or the date of an ISO
    date-time as written (no time zone shift), in the recipient's language: 31 décembre
    2026. ``format``: short, medium, long (default), full, or a CLDR pattern."""
    try:
        day = dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise LiquidError(f"date expects an ISO date, got {value!r}", token=None) from None
    return str(format_date(day, format=format, locale=_locale(context)))


# the environments, once their filters exist: text (an email's subject and text), HTML
# (every value escaped) and SMS (plain spaces)
_TEXT = _environment()
_HTML = _environment(html=True)
_SMS = _environment(sms=True)
