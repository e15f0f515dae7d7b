"""Message templates: Jinja2 files in Chinese, rendered and linted before anything is sent.

Templates live under ``include/templates/`` (``sms/<domain>/<stage>.j2``). Rendering is strict:
an undefined variable is an error, never an empty string in a message to a debtor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2 import meta

from include.dunning.sms import sms_parts
from include.paths import TEMPLATE_ROOT

__all__ = ["TemplateProblem", "lint_template", "render", "sms_parts", "template_root"]

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

    :param name: template path under the template root, e.g. ``sms/tax/payment_overdue.j2``
    :param variables: the template's variables
    :param root: another template root (tests, users' own template folders)
    """
    env = _environment(str(root or template_root()))
    return env.get_template(name).render(**variables).strip()


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
