"""Record the admission webhook exchanges of ``transcripts/kube-apiserver-v1.24.json`` on a
real kube-apiserver (the other exchanges are left as they are).

    .venv/bin/python tests/contract/record_webhooks.py ADMIN_KUBECONFIG [SCENARIO ...]

Each scenario of ``webhook_scenarios.py`` and ``mutating_scenarios.py`` runs in a namespace
named ``transcripts`` (created, then deleted and waited for), like the exchanges recorded
before. The webhook server's port and CA are written as placeholders
(``webhook_scenarios.placeholders``) and ``managedFields`` are left out, as in the other
exchanges; everything else is what the server answered and sent. Exchanges are replaced by name, new ones appended.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT / "emulator")]

from webhook_scenarios import all_scenarios, placeholders, run_scenario  # noqa: E402

from support.kubeclient import KubeClient  # noqa: E402

TRANSCRIPTS = HERE / "transcripts" / "kube-apiserver-v1.24.json"
NAMESPACE = "transcripts"


def without_managed_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_managed_fields(v) for k, v in value.items() if k != "managedFields"}
    if isinstance(value, list):
        return [without_managed_fields(v) for v in value]
    return value


async def fresh_namespace(kube: KubeClient, name: str) -> None:
    for _ in range(600):
        status, body = await kube.request(
            "POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        if status == 201:
            return
        assert status == 409, body
        await asyncio.sleep(0.5)
    raise TimeoutError(f"namespace {name} is still there")


async def gone(kube: KubeClient, name: str) -> None:
    await kube.request("DELETE", f"/api/v1/namespaces/{name}")
    for _ in range(600):
        status, _ = await kube.request("GET", f"/api/v1/namespaces/{name}")
        if status == 404:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"namespace {name} was not deleted")


async def record(kubeconfig: str, scenarios: list[str]) -> None:
    transcripts = json.loads(TRANSCRIPTS.read_text())
    crd = next(e for e in transcripts["exchanges"] if e["name"] == "crd-create")["request"]["body"]
    kube = KubeClient(kubeconfig)
    recorded = []
    try:
        await kube.apply_crd(crd)
        for scenario in scenarios:
            await fresh_namespace(kube, NAMESPACE)
            try:
                run, exchanges = await run_scenario(kube, scenario, NAMESPACE)
                recorded.extend(without_managed_fields(placeholders(exchanges, run)))
            finally:
                for name in [NAMESPACE, *kube.created_namespaces]:
                    await gone(kube, name)
                kube.created_namespaces.clear()
            print(f"{scenario}: {len(exchanges)} exchanges", file=sys.stderr)
    finally:
        await kube.close()
    by_name = {e["name"]: e for e in recorded}
    exchanges = [by_name.pop(e["name"], e) for e in transcripts["exchanges"]]
    exchanges.extend(by_name.values())
    transcripts["exchanges"] = exchanges
    TRANSCRIPTS.write_text(json.dumps(transcripts, indent=1))


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    scenarios = sys.argv[2:] or list(all_scenarios())
    asyncio.run(record(sys.argv[1], scenarios))


if __name__ == "__main__":
    main()
