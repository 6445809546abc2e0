"""Reads RethinkDB's YAML test files, keeping every scalar as source text.

The files are YAML in shape (indented mappings and `- ` lists) but their
scalars are Python/JavaScript source: `ot: {'a':1}` is the text `{'a':1}`,
not a YAML flow mapping. A generic YAML loader would mis-type or reject
them, so this reader only understands indentation, `key:` and `- `.
"""
import re

KEY = re.compile(r"^([A-Za-z_][\w\-]*):(?:\s+(.*))?$")


class Line:
    def __init__(self, indent, text, number):
        self.indent, self.text, self.number = indent, text, number


def read(text):
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        expanded = raw.replace("\t", "    ")
        lines.append(Line(len(expanded) - len(expanded.lstrip(" ")), expanded.strip(), number))
    if not lines:
        return {}
    value, _ = _block(lines, 0, lines[0].indent)
    return value


def _block(lines, index, indent):
    if lines[index].text == "-" or lines[index].text.startswith("- "):
        return _sequence(lines, index, indent)
    return _mapping(lines, index, indent)


def _scalar(lines, index, indent, first):
    """A scalar and its continuation lines (indented deeper than `indent`);
    a `|` block keeps its lines and their relative indentation."""
    if first in ("|", "|-"):
        block = []
        index += 1
        while index < len(lines) and lines[index].indent > indent:
            block.append(lines[index])
            index += 1
        base = min((line.indent for line in block), default=0)
        return "\n".join(" " * (line.indent - base) + line.text for line in block), index
    parts = [first]
    index += 1
    while index < len(lines) and lines[index].indent > indent:
        parts.append(lines[index].text)
        index += 1
    return " ".join(part for part in parts if part), index


def _sequence(lines, index, indent):
    items = []
    while index < len(lines) and lines[index].indent == indent and (lines[index].text == "-" or lines[index].text.startswith("- ")):
        line = lines[index]
        rest = line.text[1:].lstrip()
        item_indent = indent + (len(line.text) - len(rest))
        if not rest:
            if index + 1 < len(lines) and lines[index + 1].indent > indent:
                value, index = _block(lines, index + 1, lines[index + 1].indent)
            else:
                value, index = None, index + 1
        elif KEY.match(rest):
            lines[index] = Line(item_indent, rest, line.number)
            value, index = _mapping(lines, index, item_indent)
        else:
            value, index = _scalar(lines, index, indent, rest)
        items.append(value)
    return items, index


def _mapping(lines, index, indent):
    mapping = {}
    while index < len(lines) and lines[index].indent == indent:
        match = KEY.match(lines[index].text)
        if not match:
            raise ValueError("line %d: expected `key:`, found %r" % (lines[index].number, lines[index].text))
        key, rest = match.group(1), (match.group(2) or "").strip()
        if rest.startswith("#"):
            # `py: # this form does not work in Python`: a comment, so the
            # key has no value and the test is not for that language.
            rest = ""
        if rest:
            mapping[key], index = _scalar(lines, index, indent, rest)
            continue
        index += 1
        if index < len(lines) and lines[index].indent > indent:
            mapping[key], index = _block(lines, index, lines[index].indent)
        elif index < len(lines) and lines[index].indent == indent and lines[index].text.startswith("- "):
            mapping[key], index = _sequence(lines, index, indent)
        else:
            mapping[key] = None
    return mapping, index
