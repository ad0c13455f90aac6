"""The elements of a product's metadata XML (Sentinel-2 MTD, GF-6 delivery XML), read with expat.

Product metadata declares no entities: a file that does (the way to an entity-expansion bomb or
to reading other files through external entities) is refused, never expanded.  What the readers
need is flat: each element's local name, its text up to its first child, and its attributes,
in document order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Union
from xml.parsers import expat


class XmlError(ValueError):
    """Not well-formed XML, or XML that declares entities."""


@dataclass
class Element:
    tag: str                                   # local name (no namespace)
    text: str = ""                             # text before the first child
    attrib: Dict[str, str] = field(default_factory=dict)
    has_child: bool = False

    def get(self, key: str, default=None):
        return self.attrib.get(key, default)


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def elements(data: Union[bytes, str]) -> List[Element]:
    """Every element of ``data``, the root first; :class:`XmlError` when it is not well-formed or
    declares an entity."""
    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    out: List[Element] = []
    stack: List[Element] = []

    def start(name, attrs):
        el = Element(_local(name), attrib={_local(k): v for k, v in attrs.items()})
        if stack:
            stack[-1].has_child = True
        stack.append(el)
        out.append(el)

    def end(_name):
        stack.pop()

    def chars(text):
        if stack and not stack[-1].has_child:
            stack[-1].text += text

    def refuse(*_args):
        raise XmlError("it declares or references an entity, which product metadata never does")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise XmlError(str(e)) from None
    return out
