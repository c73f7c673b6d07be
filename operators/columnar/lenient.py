"""The contract's Structs, read leniently: what the bulk reader decodes a batch into.

Built with ``msgspec.defstruct`` from the fields of :class:`operators.events.Inference`
and :class:`~operators.events.Feedback` (names, types, constraints and order), so the
contract is written once: a field added there is read here without a change. Three
things differ, each to keep the bulk path in one C call and no Python per event:

- Unknown fields are skipped instead of rejected. Which lines had some is told by
  :func:`key_counts` against :meth:`LenientType.expected_keys`; those lines have their
  unknown fields moved into `attributes` as today's decoder does.
- An optional field that is absent reads as ``UNSET`` (not its default) unless that
  default is None, so the fields a line names can be counted (a null is counted as
  absent: the count then only errs high, and the line is read alone).
  :attr:`LenientType.defaults` are the contract's defaults to put back.
- No ``__post_init__``: the contract Structs' check (no reserved value in a dim) runs
  on whole columns instead (:attr:`LenientType.dims`, every field named in
  :data:`operators.limits.DIMS`). It may be stricter than the Structs, never looser: a
  line it refuses goes to today's decoder for the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import Any

import msgspec
import numpy as np
from msgspec import UNSET, UnsetType
from numpy.typing import NDArray

from operators.contract import FEEDBACK_FIELDS, INFERENCE_FIELDS
from operators.events import Feedback, Inference
from operators.limits import DIMS


@dataclass(frozen=True, slots=True)
class LenientType:
    """One contract Struct and its lenient twin, with what the parser needs to know of
    its fields (positions in ``msgspec.structs.astuple`` order)."""

    contract: type[Any]
    lenient: type[Any]
    names: tuple[str, ...]
    known: frozenset[str]  # the keys today's decoder does not move into `attributes`
    attributes_type: Any  # what `attributes` must be (moved unknown fields included)
    dims: tuple[int, ...]  # fields that may not hold a reserved dim value
    defaults: tuple[tuple[str, Any], ...]  # read as UNSET, the contract's default is not

    @classmethod
    def of(cls, contract: type[Any], known: frozenset[str]) -> LenientType:
        config = contract.__struct_config__
        fields: list[Any] = []
        defaults: list[tuple[str, Any]] = []
        infos = msgspec.structs.fields(contract)
        for info in infos:
            if info.required:
                fields.append((info.name, info.type))
            elif info.name == "attributes":  # counted by its size (see expected_keys)
                fields.append((info.name, info.type, msgspec.field(default_factory=dict)))
            elif info.default is None:  # absent or null: counted alike (see expected_keys)
                fields.append((info.name, info.type, None))
            else:
                fields.append((info.name, info.type | UnsetType, UNSET))
                if info.default is not UNSET:
                    defaults.append((info.name, info.default))
        lenient = msgspec.defstruct(
            f"Lenient{contract.__name__}", fields, tag_field=config.tag_field,
            tag=config.tag, gc=False, module=__name__,
        )  # fmt: skip
        names = tuple(info.name for info in infos)
        return cls(
            contract, lenient, names, known, infos[names.index("attributes")].type,
            tuple(k for k, name in enumerate(names) if name in DIMS), tuple(defaults),
        )  # fmt: skip

    def at(self, name: str) -> int:
        return self.names.index(name)

    def expected_keys(
        self, absent: NDArray[np.int64], attributes: NDArray[np.int64], nested: NDArray[np.int64]
    ) -> NDArray[np.int64]:
        """The ``":`` a line holds at least (:func:`key_counts`) when it names no unknown
        field: the tag, each field not `absent` (UNSET or None: a null named is not
        counted), `attributes` when not empty and each attribute, and those inside a raw
        value (`nested`). A line holding more has an unknown field, a null, or a string
        with ``":`` in it: it is then read alone (exact, slower)."""
        named = len(self.names) - 1 - absent  # `attributes` is never absent: counted apart
        return 1 + named + attributes + (attributes > 0) + nested


INFERENCE = LenientType.of(Inference, INFERENCE_FIELDS)
FEEDBACK = LenientType.of(Feedback, FEEDBACK_FIELDS)
READER = msgspec.json.Decoder(INFERENCE.lenient | FEEDBACK.lenient)
KEY_MARK = b'":'


def key_counts(lines: list[bytes]) -> NDArray[np.int64]:
    """``":`` in each line: at least one per key, when no key is followed by a blank
    (:func:`blank_colons` finds the lines where one may be). A string can only add more
    (``\\":``, ``" :"``), never hide a key: a count is never below the keys."""
    return np.fromiter(map(bytes.count, lines, repeat(KEY_MARK)), np.int64, len(lines))


def absent_counts(rows: list[tuple[Any, ...]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Fields each row does not name (UNSET or None), and those of them UNSET."""
    n = len(rows)
    unset = np.fromiter(map(tuple.count, rows, repeat(UNSET)), np.int64, n)
    return unset + np.fromiter(map(tuple.count, rows, repeat(None)), np.int64, n), unset


_BLANKS = (b" ", b"\t", b"\r")


def blank_colons(blob: bytes) -> list[int]:
    """Byte offsets in `blob` of a blank just before a ``:`` (a key may end there, its
    ``":`` then uncounted). One ``memchr`` per blank when the batch holds none."""
    found: list[int] = []
    for blank in _BLANKS:
        if blob.find(blank) < 0:
            continue
        pattern, at = blank + b":", blob.find(blank + b":")
        while at >= 0:
            found.append(at)
            at = blob.find(pattern, at + 1)
    return found
