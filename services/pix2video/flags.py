"""Command-line help generated from settings dataclasses, so that it cannot drift.

A settings field documents itself with an attribute docstring, a string literal
on the line after it (as vLLM's ``get_attr_docs`` reads config classes)::

    batch_size: int = 16
    \"\"\"Most frames per DPT call (frames from all streams are batched together).\"\"\"

:func:`field_docs` reads those from the class source with :mod:`ast` (base
classes first, so a subclass that only changes a default keeps its base's
text); :func:`flag_help` turns one into a flag's one-line help with its default.
Importing this module loads nothing heavy.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
from typing import Any


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> one-line description, over ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object:
            docs.update(_own_docs(klass))
    return docs


def _own_docs(klass: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # built in, or defined where no source is kept
        return {}
    node = next((n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)), None)
    if node is None:
        return {}
    docs: dict[str, str] = {}
    for stmt, after in zip(node.body, node.body[1:], strict=False):  # neighbours: one shorter
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def show_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == "":
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def flag_help(cls: type, name: str, extra: str = "", default: Any = dataclasses.MISSING) -> str:
    """The one-line help of field ``name``: its description and its default
    (``extra`` goes inside the parentheses, e.g. the environment variable)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    doc = field_docs(cls).get(name, "")
    if default is dataclasses.MISSING:
        default = field_default(f)
    tail = "required" if default is dataclasses.MISSING else f"default: {show_default(default)}"
    if extra:
        tail += f"; {extra}"
    # argparse formats help with %-interpolation.
    return f"{doc} ({tail})".replace("%", "%%").strip()


def metavar(f: dataclasses.Field) -> str:
    default = field_default(f)
    kind = type(default) if default is not dataclasses.MISSING and default is not None else str
    return {bool: "BOOL", int: "N", float: "X"}.get(kind, "TEXT")


def add_field_flags(
    group: argparse._ActionsContainer,
    cls: type,
    names: dict[str, str],
    required: tuple[str, ...] = (),
) -> None:
    """Adds one flag per field of ``cls``: ``names`` maps field name -> flag
    (``--guidance`` for ``guidance_scale``); type, choices (field metadata),
    default and help come from the field. ``dest`` is the field's name."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, flag in names.items():
        f = fields[name]
        default = field_default(f)
        kwargs: dict[str, Any] = {"dest": name, "help": flag_help(cls, name)}
        if "choices" not in f.metadata:
            kwargs["metavar"] = flag.split("|")[-1].lstrip("-").upper().replace("-", "_")
        if name in required or default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        elif default is not dataclasses.MISSING and type(default) in (int, float):
            kwargs["type"] = type(default)
        group.add_argument(*flag.split("|"), **kwargs)
