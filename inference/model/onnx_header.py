"""What an ONNX file says about itself, read without onnxruntime: metadata and graph I/O.

An ONNX model is a protobuf ``ModelProto``.  Its ``metadata_props`` (field 14) and its
graph's ``input``/``output`` value infos (fields 11, 12 of ``GraphProto``) are all a model
picker, a plan or the ``models`` command need; the weights (``initializer``, field 5) are
skipped by their length.  So listing and checking models costs a file read, not a network
load: the onnxruntime session is created once, when a run needs it (``opened.Model``).

Only the protobuf wire format is decoded (varints and length-delimited fields); names of
initializers are read so that graphs of IR version < 4, which list their weights as inputs
too, report the same inputs onnxruntime does.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple, Union

from ..errors import ModelError

Dim = Union[int, str, None]   # a fixed size, a symbolic name, or unknown


@dataclass(frozen=True)
class ValueInfo:
    name: str
    shape: Optional[Tuple[Dim, ...]]   # None: not a tensor, or no shape given


@dataclass(frozen=True)
class OnnxHeader:
    metadata: Dict[str, str]
    inputs: Tuple[ValueInfo, ...]      # graph inputs that are not initializers (what a run feeds)
    outputs: Tuple[ValueInfo, ...]
    ir_version: int


class _Truncated(Exception):
    pass


def _varint(buf, pos: int) -> Tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise _Truncated()
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise _Truncated()


def _spans(buf, start: int, end: int) -> Iterator[Tuple[int, int, object, int, int]]:
    """``(field number, wire type, value, field start, field end)`` of a message in
    ``buf[start:end]``; a length-delimited value is given as its ``(start, end)`` span, not copied."""
    pos = start
    while pos < end:
        first = pos
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = (pos, pos + n), pos + n
        elif wire == 5:
            value, pos = None, pos + 4
        else:  # groups (3, 4) do not occur in ONNX; anything else is not protobuf
            raise _Truncated()
        if pos > end:
            raise _Truncated()
        yield num, wire, value, first, pos


def _fields(buf, start: int, end: int) -> Iterator[Tuple[int, int, object]]:
    for num, wire, value, _, _ in _spans(buf, start, end):
        yield num, wire, value


def _text(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", errors="replace")


def _shape(buf, span) -> Optional[Tuple[Dim, ...]]:
    """TypeProto -> tensor_type (1) -> shape (2) -> dim (1): dim_value (1) or dim_param (2)."""
    tensor = next((v for n, w, v in _fields(buf, *span) if n == 1 and w == 2), None)
    if tensor is None:
        return None
    shape = next((v for n, w, v in _fields(buf, *tensor) if n == 2 and w == 2), None)
    if shape is None:
        return None
    dims: List[Dim] = []
    for n, w, v in _fields(buf, *shape):
        if n != 1 or w != 2:
            continue
        d: Dim = None
        for dn, dw, dv in _fields(buf, *v):
            if dn == 1 and dw == 0:
                d = dv
            elif dn == 2 and dw == 2:
                d = _text(buf, dv)
        dims.append(d)
    return tuple(dims)


def _value_info(buf, span) -> ValueInfo:
    name, shape = "", None
    for n, w, v in _fields(buf, *span):
        if n == 1 and w == 2:
            name = _text(buf, v)
        elif n == 2 and w == 2:
            shape = _shape(buf, v)
    return ValueInfo(name, shape)


def parse(buf) -> OnnxHeader:
    """The header of a serialised ModelProto (bytes, or a memory map of the file)."""
    metadata: Dict[str, str] = {}
    graph = None
    ir_version = 0
    for n, w, v in _fields(buf, 0, len(buf)):
        if n == 1 and w == 0:
            ir_version = v
        elif n == 7 and w == 2:
            graph = v
        elif n == 14 and w == 2:
            key = value = ""
            for kn, kw, kv in _fields(buf, *v):
                if kn == 1 and kw == 2:
                    key = _text(buf, kv)
                elif kn == 2 and kw == 2:
                    value = _text(buf, kv)
            metadata[key] = value
    if graph is None:
        raise ValueError("no graph")
    inputs, outputs, weights = [], [], set()
    for n, w, v in _fields(buf, *graph):
        if w != 2:
            continue
        if n == 11:
            inputs.append(_value_info(buf, v))
        elif n == 12:
            outputs.append(_value_info(buf, v))
        elif n == 5:  # TensorProto: its name is field 8
            name = next((_text(buf, tv) for tn, tw, tv in _fields(buf, *v) if tn == 8 and tw == 2), None)
            if name:
                weights.add(name)
    return OnnxHeader(metadata, tuple(i for i in inputs if i.name not in weights), tuple(outputs), ir_version)


def read(path: str) -> OnnxHeader:
    """The header of the ONNX file ``path``; :class:`ModelError` when it is not one."""
    if not os.path.isfile(path):
        raise ModelError("model file not found: %s" % path)
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ModelError("%s is not a valid ONNX model: the file is empty" % name)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = parse(buf)
    except OSError as e:
        raise ModelError("cannot read %s: %s" % (name, e.strerror or e)) from None
    except (_Truncated, ValueError, IndexError):
        raise ModelError("%s is not a valid ONNX model (not an ONNX protobuf, or truncated)" % name) from None
    if not header.outputs or header.ir_version <= 0:
        raise ModelError("%s is not a valid ONNX model (no graph outputs or IR version)" % name)
    return header


def _key(field: int, wire: int) -> bytes:
    return _encode_varint((field << 3) | wire)


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _encode_varint(len(payload)) + payload


def with_outputs(buf: bytes, names) -> bytes:
    """The serialised model with the graph tensors ``names`` added as float outputs (of unknown
    shape), so that a session returns them too: the encoder's features for the out-of-distribution
    check, without changing the file (which other programs read with its one output)."""
    extra = b"".join(_delimited(12, _delimited(1, n.encode("utf-8")) +
                                _delimited(2, _delimited(1, _key(1, 0) + _encode_varint(1))))
                     for n in names)
    view = memoryview(buf)
    for num, wire, value, first, end in _spans(buf, 0, len(buf)):
        if num == 7 and wire == 2:   # the graph: its outputs appended, the rest copied once
            head = _key(7, 2) + _encode_varint(value[1] - value[0] + len(extra))
            return b"".join((view[:first], head, view[value[0]:value[1]], extra, view[end:]))
    raise ValueError("no graph")


def with_metadata(buf: bytes, props: Dict[str, str]) -> bytes:
    """The serialised model with the ``metadata_props`` entries ``props`` (replacing entries of
    the same keys; the rest of the file byte for byte): how a model is renamed or given its card
    without the ``onnx`` package."""
    out = bytearray()
    for num, wire, value, first, end in _spans(buf, 0, len(buf)):
        if num == 14 and wire == 2:
            key = next((_text(buf, kv) for kn, kw, kv in _fields(buf, *value) if kn == 1 and kw == 2), "")
            if key in props:
                continue
        out += bytes(buf[first:end])
    for k, v in props.items():
        out += _delimited(14, _delimited(1, k.encode("utf-8")) + _delimited(2, v.encode("utf-8")))
    return bytes(out)
