"""Message templates: Jinja2 files in Chinese, rendered and linted before anything is sent.

Templates live under ``include/templates/`` (``sms/<domain>/<stage>.j2``). Rendering is strict:
an undefined variable is an error, never an empty string in a message to a debtor.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2 import meta, nodes

from include.dunning.sms import sms_parts
from include.paths import TEMPLATE_ROOT

__all__ = ["TemplateProblem", "lint_template", "render", "render_with_jinja", "sms_parts", "template_root"]

# Phrases that would present a reminder as legal service of a tax or power document
# (实施细则 Art. 101-106; 供电营业规则): a reminder may never claim that.
LEGAL_NOTICE_CLAIMS = ("视为送达", "依法送达", "法律文书", "具有法律效力", "正式通知书", "即为送达")
SIGNATURE = re.compile(r"^【[^【】]{2,20}】")


class TemplateProblem(ValueError):
    """A template that must not be used, with the file and the reason."""


def template_root() -> Path:
    """Return the folder the message templates are loaded from."""
    return TEMPLATE_ROOT


@lru_cache(maxsize=4)
def _environment(root: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )


def render(name: str, variables: dict[str, object], *, root: Path | None = None) -> str:
    """Render a message template to the exact text that will be sent.

    The text is exactly Jinja's (``Template.render(...).strip()``). Planning renders millions of
    messages, so it takes a faster road to the same text (see :class:`_SlotPlan`): a template's
    output is split once per combination of the variables that steer it (``debtors``,
    ``count``, ``names``...) into constant text and the variables it prints as they are
    (``{{ name }}``); later messages of that combination only fill those slots in.

    :param name: template path under the template root, e.g. ``sms/tax/payment_overdue.j2``
    :param variables: the template's variables
    :param root: another template root (tests, users' own template folders)
    """
    compiled = _COMPILED.get((root, name))  # root None: the packaged templates
    if compiled is None or time.monotonic() - compiled.checked >= _RELOAD_CHECK_SECONDS:
        compiled = _compiled(root, name)
    return compiled.render(variables)


def render_with_jinja(name: str, variables: dict[str, object], *, root: Path | None = None) -> str:
    """Render through Jinja alone: the reference :func:`render` must always agree with."""
    env = _environment(str(root or template_root()))
    return env.get_template(name).render(**variables).strip()


# How often a cached template is checked against its file (Jinja's auto_reload, throttled).
_RELOAD_CHECK_SECONDS = 1.0
_COMPILED: dict[tuple[Path | None, str], _SlotPlan] = {}


def _compiled(root: Path | None, name: str) -> _SlotPlan:
    key = (root, name)
    compiled = _COMPILED.get(key)
    now = time.monotonic()
    env = _environment(str(root or template_root()))
    template = env.get_template(name)  # Jinja reloads it when the file changed
    if compiled is None or compiled.template is not template:
        compiled = _SlotPlan(env, template)
        _COMPILED[key] = compiled
    compiled.checked = now
    return compiled


class _Uncacheable(Exception):
    """A variable value that cannot be part of a cache key (render through Jinja)."""


def _freeze(value: object) -> object:
    kind = type(value)
    if kind is str or kind is int or value is None or kind is bool:
        return (kind, value)  # the type too: True == 1, but they print differently
    if kind is list or kind is tuple:
        return (kind, tuple(_freeze(v) for v in value))  # type: ignore[attr-defined]
    raise _Uncacheable


# Nodes whose body output does not go straight into the message (captured, filtered, escaped,
# or rendered elsewhere): templates using them are always rendered by Jinja.
_OPAQUE_NODES = (
    nodes.AssignBlock,
    nodes.Block,
    nodes.CallBlock,
    nodes.EvalContextModifier,
    nodes.Extends,
    nodes.FilterBlock,
    nodes.FromImport,
    nodes.Import,
    nodes.Include,
    nodes.Macro,
)
_PLAN_CACHE_LIMIT = 4096


class _SlotPlan:
    """A template's output as constant text and printed values, per combination of the rest.

    A *slot* is a variable the template uses only as a bare ``{{ name }}`` output: Jinja prints
    it as ``str(value)`` whatever else happens. A *list slot* is a list the template only
    measures (``|length``) or prints joined (``{{ names|join("、") }}``, also of a constant
    slice ``accounts[:3]``): Jinja prints ``sep.join(map(str, items))``, so its items are slots
    and only its length steers the output. Every other variable (tested, compared, filtered
    otherwise) is a *shape* variable whose value is part of the cache key.

    For each combination of shape values and list lengths the template is rendered once by
    Jinja with a unique marker in place of each slot; the output splits at the markers into
    constant pieces. Rendering then joins the pieces with ``str()`` of the slot values and
    strips: exactly Jinja's text. Anything unusual (a missing variable, a value that is not
    str/int/bool/None or a list of those, a template with blocks, includes, macros or filter
    blocks) is rendered by Jinja itself.
    """

    def __init__(self, env: jinja2.Environment, template: jinja2.Template) -> None:
        self.template = template
        self.checked = 0.0
        self.plans: dict[
            tuple[object, ...], tuple[list[str], tuple[int, ...], tuple[tuple[str, int], ...]]
        ] = {}
        try:
            source: str | None = env.loader.get_source(env, template.name)[0]  # type: ignore[union-attr,arg-type]
        except jinja2.TemplateNotFound:
            source = None
        self.slots: tuple[str, ...] = ()
        self.lists: tuple[str, ...] = ()
        self.shapes: tuple[str, ...] = ()
        if source is not None:
            self._analyse(env.parse(source))
        self.enabled = bool(self.slots or self.lists)
        self._nonce = os.urandom(8).hex()
        self._marker = re.compile("\x00" + self._nonce + r"(\d+)\x00")

    def _analyse(self, tree: nodes.Template) -> None:
        if any(True for _ in tree.find_all(_OPAQUE_NODES)):
            return
        parent: dict[int, nodes.Node] = {}
        for node in tree.find_all(nodes.Node):
            for child in node.iter_child_nodes():
                parent[id(child)] = node
        for node in tree.iter_child_nodes():
            parent[id(node)] = tree
        used = meta.find_undeclared_variables(tree)
        local = {n.name for n in tree.find_all(nodes.Name) if n.ctx != "load"}
        uses: dict[str, list[str]] = {}
        for name in tree.find_all(nodes.Name):
            if name.ctx == "load":
                uses.setdefault(name.name, []).append(_use_of(name, parent))
        slots, lists, shapes = [], [], []
        for name in sorted(used):
            kinds = set(uses.get(name, ["other"]))
            if name in local or "other" in kinds:
                shapes.append(name)
            elif kinds == {"bare"}:
                slots.append(name)
            elif "bare" not in kinds:  # only |length and printed joins
                lists.append(name)
            else:
                shapes.append(name)
        self.slots, self.lists, self.shapes = tuple(slots), tuple(lists), tuple(shapes)

    def render(self, variables: dict[str, object]) -> str:
        if not self.enabled:
            return self.template.render(**variables).strip()
        try:
            key = tuple(
                [_freeze(variables[n]) for n in self.shapes] + [_list_key(variables[n]) for n in self.lists]
            )
        except (KeyError, _Uncacheable):
            return self.template.render(**variables).strip()  # Jinja raises or renders as usual
        plan = self.plans.get(key)
        if plan is None:
            try:
                plan = self._plan(variables)
            except KeyError:
                plan = None
            if plan is None:
                return self.template.render(**variables).strip()
            if len(self.plans) >= _PLAN_CACHE_LIMIT:
                self.plans.clear()
            self.plans[key] = plan
        pieces, where, sources = plan
        out = pieces.copy()
        try:
            for position, (name, item) in zip(where, sources, strict=True):
                value = variables[name]
                out[position] = str(value if item < 0 else value[item])  # type: ignore[index]
        except KeyError:  # a variable is missing: Jinja raises UndefinedError naming it
            return self.template.render(**variables).strip()
        return "".join(out).strip()

    def _plan(
        self, variables: dict[str, object]
    ) -> tuple[list[str], tuple[int, ...], tuple[tuple[str, int], ...]] | None:
        marked = dict(variables)
        sources: list[tuple[str, int]] = []
        for n in self.slots:
            marked[n] = f"\x00{self._nonce}{len(sources)}\x00"
            sources.append((n, -1))
        for n in self.lists:
            items = []
            for i in range(len(variables[n])):  # type: ignore[arg-type]
                items.append(f"\x00{self._nonce}{len(sources)}\x00")
                sources.append((n, i))
            marked[n] = items
        text = self.template.render(**marked)
        split = self._marker.split(text)
        pieces: list[str] = []
        where: list[int] = []
        used: list[tuple[str, int]] = []
        for i, piece in enumerate(split):
            if i % 2:
                where.append(len(pieces))
                used.append(sources[int(piece)])
                pieces.append("")
            elif "\x00" + self._nonce in piece:
                return None
            else:
                pieces.append(piece)
        return pieces, tuple(where), tuple(used)


def _list_key(value: object) -> object:
    if type(value) is not list and type(value) is not tuple:
        raise _Uncacheable
    return (type(value), len(value))  # type: ignore[arg-type]


def _use_of(name: nodes.Name, parent: dict[int, nodes.Node]) -> str:
    """Classify one use of a variable: ``bare`` output, ``length``, printed ``join``, or ``other``."""
    up = parent.get(id(name))
    if isinstance(up, nodes.Output):
        return "bare"
    if (
        isinstance(up, nodes.Filter)
        and up.node is name
        and not (up.args or up.kwargs or up.dyn_args or up.dyn_kwargs)
    ):
        if up.name in ("length", "count"):
            return "length"
    target: nodes.Node | None = name
    if (
        isinstance(up, nodes.Getitem)
        and up.node is name
        and isinstance(up.arg, nodes.Slice)
        and all(p is None or isinstance(p, nodes.Const) for p in (up.arg.start, up.arg.stop, up.arg.step))
    ):
        target, up = up, parent.get(id(up))
    if (
        isinstance(up, nodes.Filter)
        and up.name == "join"
        and up.node is target
        and not (up.kwargs or up.dyn_args or up.dyn_kwargs)
        and all(isinstance(a, nodes.Const) and isinstance(a.value, str) for a in up.args)
        and isinstance(parent.get(id(up)), nodes.Output)
    ):
        return "join"
    return "other"


def lint_template(
    name: str,
    *,
    allowed_variables: Iterable[str],
    sample: dict[str, object],
    max_parts: int = 4,
    root: Path | None = None,
) -> None:
    """Refuse a template that would send something wrong; raise ``TemplateProblem`` naming the file.

    Checks: the file exists, it uses no variable outside ``allowed_variables``, the rendered
    sample starts with a 【signature】, claims no legal service, and fits ``max_parts`` parts.

    :param name: template path under the template root
    :param allowed_variables: variables the planner provides
    :param sample: realistic values (long names, large amounts) to render the worst case
    :param max_parts: the most SMS parts one message may take
    """
    root = root or template_root()
    env = _environment(str(root))
    path = root / name
    try:
        source = env.loader.get_source(env, name)[0]  # type: ignore[union-attr]
    except jinja2.TemplateNotFound:
        raise TemplateProblem(f"{path}: template does not exist") from None
    try:
        used = meta.find_undeclared_variables(env.parse(source))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"{path}:{exc.lineno}: {exc.message}") from None
    unknown = sorted(used - set(allowed_variables))
    if unknown:
        raise TemplateProblem(f"{path}: unknown variables {', '.join(unknown)}")
    text = render(name, sample, root=root)
    if not SIGNATURE.match(text):
        raise TemplateProblem(f"{path}: the message must start with a signature such as 【某市税务】")
    claims = [c for c in LEGAL_NOTICE_CLAIMS if c in text]
    if claims:
        raise TemplateProblem(f"{path}: a reminder must not claim legal service ({', '.join(claims)})")
    parts = sms_parts(text)
    if parts > max_parts:
        raise TemplateProblem(f"{path}: the worst-case message takes {parts} parts, more than {max_parts}")
