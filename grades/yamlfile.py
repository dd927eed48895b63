"""Read a config file: the one YAML loader of workflow and run configs, errors at FILE:LINE.

Every command that reads a config (the Snakefile, ``python -m grades.workflow check|run``,
``python -m grades.train``, ``grades.calibrate``, ``grades.prefetch``) reads it here, so a
file is refused the same way everywhere, before any work:

* a missing file, a directory, an empty file, bytes that are not UTF-8;
* a YAML syntax error (``FILE:LINE:COLUMN`` and what the parser expected; tabs named);
* a key given twice in one mapping (plain YAML keeps the last value silently);
* a top level that is not a mapping.

Every problem is a :class:`~grades.config.ConfigError`. Values are read as YAML 1.1
(PyYAML's safe loader), like Snakemake reads ``--configfile``; anchors and merge keys
(``<<: *base``) work, and a merge never counts as a duplicate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping."""

    source = "<string>"

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the constructor below explains it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise ConfigError(f"{self.source}:{line}: key {key!r} is given twice in one mapping (first at "
                                      f"line {first}); YAML would silently keep the last value: remove one of them")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _syntax_error(e: yaml.YAMLError, source: str, text: str) -> ConfigError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    what = f"{context}, {problem}" if context else problem
    start = getattr(e, "context_mark", None)
    if start is not None and mark is not None and start.line != mark.line:
        what += f"; it started at line {start.line + 1}"
    hint = ""
    if mark is not None:
        lines = text.splitlines()
        line = lines[mark.line] if mark.line < len(lines) else ""
        if "\t" in line or "\t" in problem:
            hint = "; YAML indents with spaces, not tabs"
        elif line.strip():
            hint = f": {line.strip()[:80]!r}"
    return ConfigError(f"{where}: not valid YAML ({what}){hint}")


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """The YAML document in ``text``; ``source`` names it in messages (a file name)."""
    loader = StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except ConfigError:
        raise
    except yaml.YAMLError as e:
        raise _syntax_error(e, source, text) from None
    finally:
        loader.dispose()


def read_text(path: str | Path, what: str = "config file") -> str:
    """A text file's content as UTF-8; a missing file, a directory or other bytes are refused."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        hint = "" if p.parent.is_dir() else f" (nor its directory {p.parent})"
        raise ConfigError(f"{what} {path}: no such file{hint}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory; give the YAML file inside it") from None
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot be read ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"{path}:{line}:{col}: byte 0x{data[e.start]:02x} is not UTF-8 text; save the file "
                          f"as UTF-8") from None


def read_yaml(path: str | Path, what: str = "config file", *, mapping: bool = True) -> Any:
    """The YAML document of a file, by the rules of this module.

    ``mapping``: the top level must be a mapping (every config is one); an empty file is
    refused as such."""
    text = read_text(path, what)
    doc = parse_yaml(text, str(path))
    if mapping:
        if doc is None:
            raise ConfigError(f"{what} {path} is empty; it needs 'key: value' lines (see the shipped profiles in "
                              f"config/ or the run.yaml of a workflow run)")
        if not isinstance(doc, dict):
            raise ConfigError(f"{what} {path}: the top level is a {type(doc).__name__}, not a mapping of "
                              f"'key: value' lines")
    return doc
