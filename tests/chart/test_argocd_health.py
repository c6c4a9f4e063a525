"""The Argo CD health check for Session, tested the way Argo CD tests its own.

Argo CD keeps each check as resource_customizations/<group>/<kind>/health.lua with a
health_test.yaml listing testdata objects and the health status and message expected
for each (util/lua's TestLuaHealthScript compares both exactly). This runs that same
layout under Lua 5.1, the language of Argo CD's gopher-lua, in the sandbox Argo CD
gives a health script in production: the base, table and a safe os library, no string
library (so no string methods either), and the object as the global ``obj``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from lupa import lua51

from session_operator.conditions import Reason, build_conditions
from session_operator.model import Phase
from support.chart import CHART_DIR

CHECK_DIR = CHART_DIR / "argocd" / "resource_customizations" / "session-operator.io" / "Session"
SCRIPT = (CHECK_DIR / "health.lua").read_text(encoding="utf-8")
TESTS = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text(encoding="utf-8"))["tests"]
CRD = yaml.safe_load((CHART_DIR / "crds" / "sessions.session-operator.io.yaml").read_text(encoding="utf-8"))
PHASES = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]["enum"]
# Argo CD's health statuses (HealthStatusCode); anything else becomes Unknown.
VALID = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# The contract's mapping (session-api.md, "Argo CD health check").
EXPECTED = {
    "Active": "Healthy",
    "Pending": "Progressing",
    "Queued": "Progressing",
    "Rejected": "Degraded",
    "Invalid": "Degraded",
    "Inactive": "Suspended",
    "Replaced": "Healthy",
    "Completed": "Healthy",
    "Abandoned": "Healthy",
    "Archived": "Healthy",
}

# Runs one script in a fresh environment holding only what Argo CD's VM opens.
SANDBOX = """
local source, obj = ...
local env = {obj = obj}
for _, name in ipairs({"assert", "error", "ipairs", "next", "pairs", "pcall", "print", "rawequal",
                       "rawget", "rawset", "select", "tonumber", "tostring", "type", "unpack",
                       "xpcall", "getmetatable", "setmetatable", "_VERSION"}) do
  env[name] = _G[name]
end
env.table = {concat = table.concat, insert = table.insert, remove = table.remove,
             sort = table.sort, maxn = table.maxn, getn = table.getn}
env.os = {clock = os.clock, date = os.date, difftime = os.difftime, time = os.time}
env._G = env
local chunk, problem = loadstring(source, "=health.lua")
if chunk == nil then error(problem) end
setfenv(chunk, env)
-- Without Argo CD's string library, strings have no methods.
local strings = debug.getmetatable("")
local index = strings.__index
strings.__index = nil
local ok, result = pcall(chunk)
strings.__index = index
if not ok then error(result) end
return result
"""


class ArgoLua:
    def __init__(self) -> None:
        self.lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
        self.run = self.lua.execute("return function(...) " + SANDBOX + " end")

    def value(self, data: Any) -> Any:
        """Python data as Argo CD's decodeValue hands it to Lua: maps and lists become tables."""
        if isinstance(data, dict):
            table = self.lua.table()
            for key, item in data.items():
                if item is not None:
                    table[key] = self.value(item)
            return table
        if isinstance(data, list):
            table = self.lua.table()
            for i, item in enumerate(data, start=1):
                table[i] = self.value(item)
            return table
        return data

    def health(self, obj: dict[str, Any], script: str = SCRIPT) -> dict[str, str]:
        result = self.run(script, self.value(obj))
        assert lua51.lua_type(result) == "table", "a health script must return a table"
        status = {key: value for key, value in result.items()}
        assert set(status) <= {"status", "message"}, status
        if status.get("status") not in VALID:
            return {"status": "Unknown", "message": "Lua returned an invalid health status"}
        return {"status": status["status"], "message": status.get("message", "")}


@pytest.fixture(scope="module")
def argo() -> ArgoLua:
    return ArgoLua()


def load(path: str) -> dict[str, Any]:
    with (CHECK_DIR / path).open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_runs_under_lua_5_1(argo: ArgoLua) -> None:
    assert argo.lua.eval("_VERSION") == "Lua 5.1"


def test_the_sandbox_is_as_strict_as_argo_cds(argo: ArgoLua) -> None:
    with pytest.raises(lua51.LuaError):
        argo.health({}, 'return {status = string.upper("healthy")}')
    with pytest.raises(lua51.LuaError):
        argo.health({}, 'local s = "x" return {status = s:upper()}')
    with pytest.raises(lua51.LuaError):
        argo.health({}, 'return {status = io.read()}')
    assert argo.health({}, 'return {status = "Healthy", message = table.concat({"a", "b"}, ",")}') == {
        "status": "Healthy",
        "message": "a,b",
    }
    assert argo.health({}, 'return {status = "Fine"}')["status"] == "Unknown"


@pytest.mark.parametrize("case", TESTS, ids=[t["inputPath"] for t in TESTS])
def test_health_test_yaml(argo: ArgoLua, case: dict[str, Any]) -> None:
    assert argo.health(load(case["inputPath"])) == case["healthStatus"]


def test_every_phase_and_every_testdata_file_is_covered() -> None:
    inputs = [t["inputPath"] for t in TESTS]
    assert sorted(inputs) == sorted(f"testdata/{p.name}" for p in (CHECK_DIR / "testdata").glob("*.yaml"))
    covered = {}
    for case in TESTS:
        obj = load(case["inputPath"])
        phase = (obj.get("status") or {}).get("phase")
        settled = phase and obj["metadata"]["generation"] == obj["status"]["observedGeneration"]
        if settled and not obj["metadata"].get("deletionTimestamp"):
            covered[phase] = case["healthStatus"]["status"]
    assert set(EXPECTED) == set(PHASES)
    assert covered == EXPECTED


def test_status_is_the_contracts_mapping_for_every_phase(argo: ArgoLua) -> None:
    """Beyond the testdata: each phase with only a phase and a Ready message."""
    for phase, health in EXPECTED.items():
        obj = {
            "apiVersion": "session-operator.io/v1alpha1",
            "kind": "Session",
            "metadata": {"name": "x", "generation": 3},
            "status": {
                "phase": phase,
                "observedGeneration": 3,
                "conditions": [{"type": "Ready", "status": "True", "reason": "R", "message": f"why {phase}"}],
            },
        }
        assert argo.health(obj) == {"status": health, "message": f"why {phase}"}
    assert argo.health({"metadata": {}, "status": {"phase": "Martian"}}) == {
        "status": "Unknown",
        "message": "Phase Martian",
    }


def test_testdata_conditions_are_the_operators(argo: ArgoLua) -> None:
    """The testdata carry the six conditions the operator writes for each phase."""
    for path in sorted((CHECK_DIR / "testdata").glob("*.yaml")):
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
        status = obj.get("status")
        if not status:
            continue
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        phase = Phase(status["phase"])
        reason = Reason(ready["reason"]) if phase is not Phase.ARCHIVED else Reason.REQUESTED
        archived = next(c for c in status["conditions"] if c["type"] == "Archived")
        replaced = next(c for c in status["conditions"] if c["type"] == "Replaced")
        expected = build_conditions(
            phase=phase,
            reason=reason,
            message=ready["message"],
            generation=status["observedGeneration"],
            now=datetime(2026, 11, 21, tzinfo=UTC),
            replaced_reason=Reason(replaced["reason"]) if replaced["status"] == "True" else None,
            archived_reason=Reason(archived["reason"]) if archived["status"] == "True" else None,
        )

        def shape(conditions: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
            return [(c["type"], c["status"], c["reason"]) for c in conditions]

        assert shape(status["conditions"]) == shape(expected), path.name


def test_the_check_is_packaged_with_the_chart_and_its_tests_are_not() -> None:
    ignore = (CHART_DIR / ".helmignore").read_text(encoding="utf-8").split()
    assert "testdata/" in ignore and "health_test.yaml" in ignore
    assert SCRIPT.isascii()
    annotations = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))["annotations"]
    assert (CHART_DIR / annotations["session-operator.io/argocd-health-check"]).samefile(CHECK_DIR / "health.lua")
