"""Griffe extension: fnn's docstrings as Markdown for mkdocstrings.

fnn's docstrings are Google style with a few reStructuredText habits. Before
mkdocstrings parses them, this extension rewrites, in every docstring of the
package:

* Sphinx roles (``:func:`check_block```, ``:class:`~fnn.nn.Block```) into
  cross-references to the public name that documents the object
  (``[`check_block`][fnn.nn.check_block]``); a name that is not fnn's (e.g.
  ``jax.sharding.Mesh``) stays as code. A role naming an ``fnn.`` path that does
  not exist stays a cross-reference, so ``mkdocs build --strict`` fails on it.
* ``.. math::`` blocks into display math (``$$ ... $$``, rendered by MathJax
  through pymdownx.arithmatex).
* ``::`` literal-block markers into a colon (the indented block that follows is
  a Markdown code block already); reStructuredText simple tables
  (``====  ====`` rulers) into fenced text blocks.
* Short source names (``[Laurent, Backpropagation equations]``) into links to
  their entry on the Sources page.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from griffe import Alias, Docstring, Extension, Module, Object

_ROLE = re.compile(
    r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):`(~?)([\w.]+)(\(\))?`"
)
_SOURCES = {
    "Deep Learning 2020": "deep-learning-2020",
    "Laurent": "laurent",
    "Balvert": "balvert",
    "Neacșu & Vasilescu": "neacsu-vasilescu",
}
_CITE = re.compile(
    r"\[((?:Deep\s+Learning\s+2020|Laurent|Balvert|Neacșu\s+&\s+Vasilescu)"
    r"(?:[;,][^\]\[`]*)?)\](?![\[(])"
)
_TABLE_RULE = re.compile(r"^\s*=+(?: +=+)+\s*$")


def _walk(obj: Object):
    yield obj
    for member in obj.members.values():
        if isinstance(member, Alias):
            continue
        yield from _walk(member)


def _runtime_exports(pkg: Module) -> None:
    """Set each public module's exports from its ``__all__`` at run time.

    Some ``__all__`` lists are computed (``fnn.optim`` adds the schedules it
    re-exports), which static analysis cannot evaluate; likewise a docstring
    assigned to ``__doc__`` after the definition is taken from the live object.
    """
    # Import the package that is being documented (this checkout), not another
    # installed copy.
    root = str(Path(pkg.filepath).parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    for module in _walk(pkg):
        if not isinstance(module, Module) or "._" in f".{module.path}":
            continue
        try:
            live = importlib.import_module(module.path)
            names = list(live.__all__)
        except (ImportError, AttributeError):
            continue
        module.exports = names
        for name in names:
            member = module.members.get(name)
            try:
                target = member.final_target if isinstance(member, Alias) else member
            except Exception:  # noqa: BLE001
                continue
            if target is None or target.docstring is not None or target.is_module:
                continue
            if target.is_attribute:  # a public constant or type alias
                doc = f"``{name} = {target.value}``" if target.value else None
            else:
                doc = inspect.getdoc(getattr(live, name, None))
            if doc:
                target.docstring = Docstring(doc, parent=target)


class FnnDocstrings(Extension):
    """Rewrites the docstrings of the ``fnn`` package (see the module docstring)."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        if pkg.name != "fnn":
            return
        self.pkg = pkg
        _runtime_exports(pkg)
        self.public = self._public_index(pkg)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self.rewrite(obj.docstring.value, obj)

    # --- names -----------------------------------------------------------------
    def _public_index(self, pkg: Module) -> dict[str, str]:
        """Canonical path -> the public path under which the object is documented."""
        index: dict[str, str] = {}
        modules = [m for m in _walk(pkg) if isinstance(m, Module)]
        for module in modules:
            if any(part.startswith("_") for part in module.path.split(".")):
                continue
            exported = module.exports
            names = (
                [n if isinstance(n, str) else n.name for n in exported]
                if exported is not None
                else [n for n in module.members if not n.startswith("_")]
            )
            for name in names:
                member = module.members.get(name)
                if member is None:
                    continue
                public = f"{module.path}.{name}"
                target = member.target_path if isinstance(member, Alias) else public
                index.setdefault(target, public)
                index.setdefault(public, public)
                if not isinstance(member, Alias) and member.is_class:
                    for sub in member.members:
                        if not sub.startswith("_"):
                            index.setdefault(f"{public}.{sub}", f"{public}.{sub}")
        return index

    def _lookup(self, path: str) -> str | None:
        if not (path == "fnn" or path.startswith("fnn.")):
            return None
        try:
            obj = self.pkg[path[4:]] if path != "fnn" else self.pkg
        except (KeyError, ValueError, Exception):  # noqa: BLE001
            return None
        if isinstance(obj, Alias):
            try:
                target = obj.target_path
            except Exception:  # noqa: BLE001
                target = obj.path
        else:
            target = obj.path
        if obj.is_module and not any(p.startswith("_") for p in path.split(".")):
            return path
        return self.public.get(target) or self.public.get(path)

    def _resolve(self, name: str, obj: Object) -> str | None:
        candidates = [name] if name.startswith("fnn.") else []
        scope: Object | None = obj
        while scope is not None:
            candidates.append(f"{scope.path}.{name}")
            scope = scope.parent
        candidates.append(f"fnn.{name}")
        for path in candidates:
            public = self._lookup(path)
            if public is not None:
                return public
        return None

    def _role(self, m: re.Match, obj: Object) -> str:
        tilde, name, call = m.group(1), m.group(2).lstrip("."), m.group(3) or ""
        shown = (name.rsplit(".", 1)[-1] if tilde else name) + call
        public = self._resolve(name, obj)
        if public is not None:
            return f"[`{shown}`][{public}]"
        if name.startswith("fnn."):
            return f"[`{shown}`][{name}]"  # unknown fnn name: fails --strict
        return f"`{shown}`"

    # --- text ------------------------------------------------------------------
    def rewrite(self, text: str, obj: Object) -> str:
        text = _ROLE.sub(lambda m: self._role(m, obj), text)
        text = _CITE.sub(self._cite, text)
        return _blocks(text)

    @staticmethod
    def _cite(m: re.Match) -> str:
        inner = m.group(1)
        names = [n for n in _SOURCES if re.match(re.escape(n).replace("\\ ", r"\s+"), inner)]
        anchor = _SOURCES[names[0]] if names and ";" not in inner.split(",")[0] else "sources"
        return f"[{inner}][{anchor}]"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


_NAMES_START = re.compile(r"^\s+\w+(?:, \w+)*,\s*$")
_NAMES_END = re.compile(r"^\s+\w+(?:, \w+)*:")


def _join_names(lines: list[str]) -> list[str]:
    """Join an argument-name list broken over two lines (``a, b,`` then
    ``    c, d: text``) into one ``a, b, c, d: text`` line for the parser."""
    out: list[str] = []
    for line in lines:
        if out and _NAMES_START.match(out[-1]) and _NAMES_END.match(line):
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
    return out


def _blocks(text: str) -> str:
    lines = _join_names(text.split("\n"))
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped == ".. math::":
            base = _indent(line)
            body: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            content = [b.strip() for b in body if b.strip()]
            pad = " " * base
            out += [pad + "$$", *(pad + c for c in content), pad + "$$", ""]
            continue
        if _TABLE_RULE.match(line):
            pad = " " * _indent(line)
            table = [line]
            rules = 1
            i += 1
            while i < len(lines) and rules < 3 and lines[i].strip():
                table.append(lines[i])
                rules += bool(_TABLE_RULE.match(lines[i]))
                i += 1
            out += [pad + "```text", *table, pad + "```"]
            continue
        if stripped == "::":
            i += 1
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            line = line.rstrip()[:-1]
        out.append(line)
        i += 1
    return "\n".join(out)
