"""The README's Install section says what the chart does (paths, alerts, defaults)."""

from __future__ import annotations

import re

from support.chart import ROOT, only, render

TEXT = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL = TEXT[TEXT.index("\n## Install\n") : TEXT.index("\n## ", TEXT.index("\n## Install\n") + 1)]


def test_paths_it_names_exist() -> None:
    for path in re.findall(r"(charts/session-operator/[\w./-]+|examples/[\w.-]+\.yaml)", INSTALL):
        assert (ROOT / path.rstrip(".")).exists(), path


def test_alerts_it_lists_are_the_charts() -> None:
    listed = set(re.findall(r"^\| `(SessionOperator\w+)` \|", INSTALL, re.M))
    rule = only(render({"monitoring": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    assert listed == {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}


def test_defaults_it_explains_are_the_rendered_ones() -> None:
    docs = render()
    pdb = only(docs, "PodDisruptionBudget")["spec"]
    assert "`minAvailable: 0`" in INSTALL and pdb["minAvailable"] == 0
    assert "`unhealthyPodEvictionPolicy: AlwaysAllow`" in INSTALL
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    strategy = only(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert "`maxUnavailable: 100%`" in INSTALL and strategy["maxUnavailable"] == "100%"
    assert "resource.customizations.health.session-operator.io_Session" in INSTALL
