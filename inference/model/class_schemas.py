"""The class schemas a model can be trained to: binary tailings, and the ten mining components.

Each class has an id, a name, a one-line definition (the panel's tooltips, the README) and a
colour.  In the ten-class palette the water-like classes (settling pond: blue, tailings storage
facility: violet) stand apart from the earth classes (browns, ochres, oranges) and from
infrastructure and dams (greys, green).  ``classes_from_spec`` turns what a user types
(``tailings``, ``mining10``, or ``pit,dump,pond``) into the class list of a model.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

from .metadata import ClassInfo


class SchemaClass(NamedTuple):
    id: int
    name: str
    colour: str
    definition: str


BACKGROUND = SchemaClass(0, "background", "#000000", "everything that is none of the classes")

TAILINGS: List[SchemaClass] = [
    BACKGROUND,
    SchemaClass(1, "tailings", "#e6550d", "a tailings pond or beach: processing residue deposited as slurry, "
                                          "wet or dry"),
]

MINING10: List[SchemaClass] = [
    BACKGROUND,
    SchemaClass(1, "excavation", "#8c510a", "the open pit or quarry floor where ore or rock is being dug"),
    SchemaClass(2, "preparatory work area", "#dfc27d", "ground stripped of vegetation and topsoil ahead of "
                                                       "digging or dumping"),
    SchemaClass(3, "dumping ground", "#bf812d", "a heap of waste rock or overburden tipped outside the pit"),
    SchemaClass(4, "stockpile", "#f6b26b", "a heap of extracted ore, coal or topsoil stored for processing or "
                                           "reclamation"),
    SchemaClass(5, "settling pond", "#2b8cbe", "a small pond of process or drainage water in which suspended "
                                               "solids settle"),
    SchemaClass(6, "infrastructure", "#969696", "the mine's buildings, processing plant, workshops, conveyors and "
                                                "yards"),
    SchemaClass(7, "exploitation slope", "#d95f0e", "the benches and walls of the pit cut by the digging"),
    SchemaClass(8, "transport slope", "#fee391", "a haul road or ramp carrying vehicles into and out of the pit"),
    SchemaClass(9, "dam", "#238443", "the embankment that retains a tailings storage facility or a settling "
                                     "pond"),
    SchemaClass(10, "tailings storage facility", "#7a0177", "the impoundment where processing residues "
                                                            "(tailings) are deposited"),
]

SCHEMAS: Dict[str, List[SchemaClass]] = {"tailings": TAILINGS, "mining10": MINING10}
SCHEMA_LABELS = {"tailings": "tailings (binary)", "mining10": "mining components (ten classes)"}
EXTRA_COLOURS = ["#e6550d", "#3182bd", "#31a354", "#756bb1", "#fdae6b", "#636363", "#e7ba52", "#9c9ede",
                 "#d6616b", "#17becf", "#bcbd22"]


def classes_from_spec(spec: str) -> List[ClassInfo]:
    """The classes of a schema (``tailings``, ``mining10``) or of a list of names (background
    first, added when missing): ``pit,dump,pond`` -> background, pit, dump, pond."""
    key = (spec or "").strip().lower()
    if key in SCHEMAS:
        return [ClassInfo(c.id, c.name, c.colour, c.id == 0) for c in SCHEMAS[key]]
    names = [n.strip() for n in (spec or "").split(",") if n.strip()]
    if not names:
        raise ValueError("no classes given: a schema (%s) or names separated by commas" % ", ".join(SCHEMAS))
    if len({n.lower() for n in names}) != len(names):
        raise ValueError("class names repeat: %s" % spec)
    if names[0].lower() != "background":
        names = ["background"] + [n for n in names if n.lower() != "background"]
    return [ClassInfo(i, n, "#000000" if i == 0 else EXTRA_COLOURS[(i - 1) % len(EXTRA_COLOURS)], i == 0)
            for i, n in enumerate(names)]


def definition(name: str) -> str:
    """The one-line definition of a schema class (by name; "" when it is not one)."""
    for schema in SCHEMAS.values():
        for c in schema:
            if c.name.lower() == name.strip().lower():
                return c.definition
    return ""


def schema_of(classes: Sequence[ClassInfo]) -> str:
    """``mining10``, ``tailings`` or ``custom``: which schema a model's classes are."""
    names = [c.name.lower() for c in classes]
    for key, schema in SCHEMAS.items():
        if names == [c.name for c in schema]:
            return key
    return "custom"
