"""kube.Kube.connect: the kubeconfig's context (as kubectl's --context), its namespace, the user agent."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from session_operator.kube import USER_AGENT, Kube

CONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "team-a",
    "contexts": [
        {"name": "team-a", "context": {"cluster": "one", "user": "me", "namespace": "team-a"}},
        {"name": "other", "context": {"cluster": "two", "user": "me"}},
    ],
    "clusters": [
        {"name": "one", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}},
        {"name": "two", "cluster": {"server": "https://127.0.0.2:6443", "insecure-skip-tls-verify": True}},
    ],
    "users": [{"name": "me", "user": {"token": "t"}}],
}


@pytest.fixture
def kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(CONFIG))
    return str(path)


@pytest.mark.parametrize(
    ("context", "server", "namespace"),
    [(None, "https://127.0.0.1:6443", "team-a"), ("other", "https://127.0.0.2:6443", "default")],
)
async def test_the_context_picks_server_and_namespace(
    kubeconfig: str, context: str | None, server: str, namespace: str
) -> None:
    kube = await Kube.connect(kubeconfig, context)
    try:
        assert (kube.server, kube.namespace, kube._user_agent) == (server, namespace, USER_AGENT)
    finally:
        await kube.close()


async def test_a_client_of_its_own_names_itself(kubeconfig: str) -> None:
    kube = await Kube.connect(kubeconfig, user_agent="kubectl-session/1")
    try:
        assert kube._user_agent == "kubectl-session/1"
        assert kube._api.user_agent == "kubectl-session/1"
    finally:
        await kube.close()


async def test_an_unknown_context_is_an_error(kubeconfig: str) -> None:
    with pytest.raises(Exception, match="nope"):
        await Kube.connect(kubeconfig, "nope")
