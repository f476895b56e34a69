"""Reading a YAML file a user wrote (a config, an --enqueue file, a search space, a dashboard):
UTF-8 text of bounded size, parsed safely, every way it can fail as one line naming the file.
The one YAML reader: nothing else calls `yaml.safe_load` on a user's file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from exptrack.errors import UserError, shown

# A YAML file exptrack reads (config, --enqueue, search space, dashboard) is at most 1 MiB: an
# exported config is about 1 KB and a search space a few; a bigger file is not one of these.
MAX_YAML_BYTES = 1 << 20
# ... and holds at most 100,000 values once its aliases are expanded (a search space has tens).
MAX_YAML_VALUES = 100_000


def read_text(path: Path) -> str:
    """A YAML file's text: UTF-8, at most MAX_YAML_BYTES. A stray byte or a file that cannot be
    read is one line naming the file, not a UnicodeDecodeError's traceback."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise UserError(
            f"{path}: cannot be read ({exc.strerror or type(exc).__name__}); pass a readable file"
        ) from exc
    if len(data) > MAX_YAML_BYTES:
        raise UserError(
            f"{path} is over {MAX_YAML_BYTES // 1024} KiB; pass a config, space or dashboard file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = data[exc.start]
        raise UserError(
            f"{path}: byte 0x{byte:02x} at offset {exc.start} is not UTF-8; save the file as UTF-8"
        ) from exc


def _expanded_size(node: Any, source: str, sizes: dict[int, int], path: set[int]) -> int:
    """How many values `node` holds once its YAML aliases are expanded (as json.dumps or a walk
    of the config expands them), counted without expanding: `&a [*a]` (a cycle) or a few lines of
    aliases that expand to billions of values are one line here, not a hang or a RecursionError."""
    if not isinstance(node, dict | list):
        return 1
    key = id(node)
    if key in path:
        raise UserError(f"{source}: a YAML alias refers to itself; write the values out")
    if key not in sizes:
        path.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        sizes[key] = 1 + sum(_expanded_size(child, source, sizes, path) for child in children)
        path.discard(key)
    if sizes[key] > MAX_YAML_VALUES:
        raise UserError(
            f"{source}: expands to more than {MAX_YAML_VALUES:,} values (YAML aliases); write it out"
        )
    return sizes[key]


def load_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load`, every way it can fail as one line: bad syntax, a tag (`!!python/...` is
    never executed: safe_load refuses it), a number past Python's 4,300-digit limit (ValueError
    from PyYAML's int constructor), nesting deeper than the stack (RecursionError)."""
    try:
        data = yaml.safe_load(text)
        _expanded_size(data, source, {}, set())
        return data
    except yaml.constructor.ConstructorError as exc:
        raise UserError(
            f"{source}: not valid YAML ({shown(exc.problem, 120)}); write plain values, no tags"
        ) from exc
    except yaml.MarkedYAMLError as exc:  # where it broke, as an editor counts: line and column from 1
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise UserError(
            f"{where}: not valid YAML ({shown(exc.problem or exc.context, 80)}); fix the file"
        ) from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid YAML ({exc.__class__.__name__}); fix the file") from exc
    except (ValueError, OverflowError) as exc:
        raise UserError(f"{source}: a value YAML cannot hold ({shown(str(exc), 60)}); fix the file") from exc
    except RecursionError as exc:
        raise UserError(f"{source}: nested too deeply for YAML; fix the file") from exc
