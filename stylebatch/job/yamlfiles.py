"""Reading YAML safely: presets, manifests and `--set` values all go through `load_yaml`.

`yaml.safe_load` plus three refusals or fixes: anchors/aliases are refused (an alias bomb parses
fast and explodes when walked), a key given twice in one mapping is refused (PyYAML silently keeps
the last), and `1e4` is a number (YAML 1.1 reads it as text; YAML 1.2 and people read a number).
Syntax errors become one line with the file and line number.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from stylebatch.errors import ConfigError


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load plus a refusal of anchors/aliases: an alias bomb ("billion laughs") parses fast into
    shared references and only explodes when the data is walked, so it must be refused while parsing."""

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed; write the values out", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: ANN001
        """Refuse a key given twice in one mapping (PyYAML silently keeps the last)."""
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in first:
                        raise yaml.constructor.ConstructorError(
                            None,
                            None,
                            f"key '{key_node.value}' given twice (first on line {first[key_node.value]})",
                            key_node.start_mark,
                        )
                    first[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


# YAML 1.1 (PyYAML) reads `1e4` and `1.0e4` as text; accept them as numbers, as YAML 1.2 and people do.
_NoAliasLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML safely; syntax errors become one line with the file and line number."""
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (safe loader subclass)
    except RecursionError:  # PyYAML's composer recurses once per level of nesting
        raise ConfigError(f"{source}: not valid YAML: nested more than {MAX_DEPTH} levels deep") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    except ValueError as e:  # a number with more digits than Python converts (over 4,300)
        raise ConfigError(f"{source}: not valid YAML: {str(e).splitlines()[0]}") from None
    if nesting_depth(data) > MAX_DEPTH:  # what reads it later (hashing, JSON, messages) recurses too
        raise ConfigError(f"{source}: not valid YAML: nested more than {MAX_DEPTH} levels deep")
    return data


MAX_DEPTH = 50  # levels of lists and mappings in a manifest, a preset or a --set value: far above any real one


def nesting_depth(data: Any) -> int:
    """How deeply lists and mappings nest in `data` (without recursion: it may be very deep)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack += [(v, depth + 1) for v in item.values()] + [(k, depth + 1) for k in item]
        elif isinstance(item, (list, tuple)):
            deepest = max(deepest, depth)
            stack += [(v, depth + 1) for v in item]
    return deepest
