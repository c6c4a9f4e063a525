"""The image's build file keeps the properties the chart relies on.

hadolint (`make lint`) checks the Containerfile's style; this checks what the
chart's restricted security context needs from the image: a numeric non-root
user (runAsNonRoot can only verify a numeric one), the `session-operator`
entrypoint the Deployment's args follow, and wheels only in the final stage.
"""

from __future__ import annotations

import re

from support.chart import ROOT, container_user_id

TEXT = (ROOT / "Containerfile").read_text(encoding="utf-8")
STAGES = re.split(r"^FROM ", TEXT, flags=re.M)[1:]


def test_base_image_is_a_build_argument_with_a_standard_default() -> None:
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", TEXT, re.M)
    assert default and re.fullmatch(r"docker\.io/library/python:3\.11-slim(-\w+)?", default.group(1))
    assert all(stage.startswith("${BASE_IMAGE}") for stage in STAGES)


def test_multi_stage_and_wheels_only_in_the_final_stage() -> None:
    assert len(STAGES) == 2
    build, final = STAGES
    assert "pip wheel" in build
    assert "--no-index" in final and "--only-binary=:all:" in final
    assert "COPY --from" not in final  # the wheels are mounted, not left in a layer
    assert re.search(r"pip uninstall --yes .*\bpip setuptools wheel\b", final)


def test_runs_as_a_numeric_non_root_user_with_the_operator_as_entrypoint() -> None:
    user = re.findall(r"^USER (\S+)$", TEXT, re.M)
    assert user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", user[-1])
    assert int(user[-1].split(":")[0]) == container_user_id()
    assert re.search(r'^ENTRYPOINT \["session-operator"\]$', TEXT, re.M)
