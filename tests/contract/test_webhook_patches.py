"""A mutating webhook's patch, decoded and applied by the emulator (``kube_emulator.gopatch``) as
the Go code kube-apiserver v1.24 runs does it: the answers of ``transcripts/go-json-patch.json``
were produced by that code (see its ``source``), and every case is compared, results and error
texts alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kube_emulator.gopatch import PatchError, apply_patch, b64decode, decode_patch

RECORDED = json.loads((Path(__file__).resolve().parent / "transcripts" / "go-json-patch.json").read_text())


def outcome(raw: str) -> list[Any]:
    try:
        operations = decode_patch(raw.encode())
    except PatchError as exc:
        return ["decode", str(exc)]
    try:
        return ["ok", apply_patch(RECORDED["doc"], operations)]
    except PatchError as exc:
        return ["apply", str(exc)]


@pytest.mark.parametrize("case", RECORDED["patches"], ids=lambda case: case["patch"][:60])
def test_patch_as_go_applies_it(case: dict[str, Any]) -> None:
    assert outcome(case["patch"]) == case["go"]


@pytest.mark.parametrize("case", RECORDED["base64"], ids=lambda case: repr(case["text"]))
def test_base64_as_go_decodes_it(case: dict[str, Any]) -> None:
    try:
        b64decode(case["text"])
    except ValueError as exc:
        assert str(exc) == case["go"]
    else:
        assert case["go"] is None


def test_the_document_is_not_modified() -> None:
    doc = {"spec": {"list": [1]}}
    assert apply_patch(doc, [{"op": "add", "path": "/spec/list/-", "value": 2}]) == {"spec": {"list": [1, 2]}}
    assert doc == {"spec": {"list": [1]}}
