"""``kubectl session``: Sessions from kubectl (the console script ``kubectl-session``).

kubectl runs any executable named ``kubectl-session`` found on PATH for
``kubectl session ...``; installing the package puts one next to its Python.

    who TARGET         the holder, how long it has held, its idle deadline, the live queue
    why NAME           the session's decision, in one paragraph
    activate NAME      make NAME the Active session of its target now (spec.activateRequest)
    touch NAME         record activity (annotation session-operator.io/last-activity)
    complete NAME      spec.state: Completed (releases the target)
    archive NAME       spec.state: Archived

Flags, before or after the command, as kubectl's: ``--kubeconfig``, ``--context``,
``-n/--namespace`` (default: the context's namespace), ``-A/--all-namespaces`` (``who``
only), ``-o/--output json|yaml`` (default: a table, or one line).

The queue ``who`` and ``why`` show is computed from the sessions themselves (Queued ones
of the target in the arbiter's order: priority, then age, then name), never read from
``status.queuePosition``, so it is exact at any moment.

Exit codes: 0 done; 1 an error, with one message that names the problem and the fix;
2 a bad command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import yaml

from . import __version__, paths
from . import target as target_rules
from .errors import ApiError
from .kube import MERGE_PATCH, Kube
from .model import (
    ACTIVITY_ANNOTATION,
    GROUP,
    PLURAL,
    Claim,
    InvalidSpecError,
    Phase,
    SessionView,
    claim_name,
    format_time,
    parse_duration,
    parse_time,
)

PROG = "kubectl session"
USER_AGENT = f"kubectl-session/{__version__}"
RESOURCE = f"{PLURAL}.{GROUP}"  # what kubectl auth can-i and RBAC call it
KIND_NAME = f"session.{GROUP}"  # what kubectl prints: session.session-operator.io/NAME
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
NONE = "<none>"
OUTPUTS = ("json", "yaml")
PAGE = "500"


class PluginError(Exception):
    """A failure to report: one message that names the problem and the fix."""


# --- the command line ---------------------------------------------------------------------------

COMMANDS: dict[str, tuple[str, str]] = {
    # command: (argument, one line of help)
    "who": ("TARGET", "The holder of TARGET, how long it has held it, its idle deadline, the live queue."),
    "why": ("NAME", "Session NAME's decision, in one paragraph."),
    "activate": ("NAME", "Make NAME the Active session of its target now, whatever its onConflict."),
    "touch": ("NAME", "Record activity on NAME now (its idle deadline moves)."),
    "complete": ("NAME", "spec.state Completed: NAME is done; the next in line takes the target."),
    "archive": ("NAME", "spec.state Archived: NAME is archived; the next in line takes the target."),
}

EXAMPLES = """\
examples:
  kubectl session who repo/payments            # holder and live queue, in the context's namespace
  kubectl session who repo/payments -A         # the target in every namespace
  kubectl session why bob-1 -n team-a          # why bob-1 is Queued, Rejected, ...
  kubectl session activate bob-1               # bob-1 Active now; the holder is Replaced
  kubectl session touch alice-1                # record activity (idleTimeout counts from now)
  kubectl session complete alice-1 -o yaml     # done; prints the session

activate sets spec.activateRequest to the current time and spec.state to Active in one
merge patch; the operator decides it as a Replace, in one decision, and records the
request in status.activateRequest. It waits (--wait, up to --timeout) for that decision.
"""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _output(text: str) -> str:
    value = text.removeprefix("=")  # kubectl (pflag) reads -o=json as json
    if value not in OUTPUTS:
        raise argparse.ArgumentTypeError(f"unknown output format {value!r}: use json or yaml (default: a table)")
    return value


def _namespace(text: str) -> str:
    value = text.removeprefix("=")
    if not value:
        raise argparse.ArgumentTypeError("an empty namespace")
    return value


def _timeout(text: str) -> float:
    try:
        seconds = float(text) if text.isdigit() else parse_duration(text, "--timeout").total_seconds()
    except InvalidSpecError as e:
        raise argparse.ArgumentTypeError(e.message) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0s")
    return seconds


def _global_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """kubectl's flags; on the subcommands too (with no defaults there), so that they
    may come before or after the command, as with kubectl."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--kubeconfig", metavar="PATH", default=default(None),
                        help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).")
    parser.add_argument("--context", metavar="NAME", default=default(None),
                        help="The kubeconfig context to use (default: its current context).")
    parser.add_argument("-n", "--namespace", metavar="NS", type=_namespace, default=default(None),
                        help="The namespace (default: the context's namespace, else default).")
    parser.add_argument("-A", "--all-namespaces", action="store_true", default=default(False),
                        help="who: the target in every namespace.")
    parser.add_argument("-o", "--output", metavar="FORMAT", type=_output, default=default(None),
                        help="json or yaml (default: a table, or one line).")


def build_parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {f'{command} {arg}':<17}{summary}" for command, (arg, summary) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} COMMAND ARGUMENT [flags]",
        description="Sessions (session-operator.io/v1alpha1) from kubectl: who holds a target, why a session\n"
        f"is where it is, and the commands that change that.\n\ncommands:\n{listing}",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _global_flags(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     help="one of the commands above; flags may come before or after it")
    for command, (argument, summary) in COMMANDS.items():
        sub = commands.add_parser(command, description=summary, prog=f"{PROG} {command}",
                                  usage=f"{PROG} {command} {argument} [flags]")
        sub.add_argument(argument.lower(), metavar=argument)
        _global_flags(sub, defaults=False)
        if command == "activate":
            sub.add_argument("--wait", type=_bool, nargs="?", const=True, default=True, metavar="BOOL",
                             help="Wait until the operator has acted on the request (default true; --wait=false "
                             "to return once it is recorded).")
            sub.add_argument("--timeout", type=_timeout, default=30.0, metavar="DURATION",
                             help="How long --wait waits, e.g. 30s, 2m (default 30s).")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.all_namespaces and args.command != "who":
        parser.error(f"-A/--all-namespaces works with 'who' only; name the session's namespace with -n NS "
                     f"({args.command} acts on one session)")
    if args.all_namespaces and args.namespace:
        parser.error("-n/--namespace and -A/--all-namespaces: choose one")
    return args


# --- reading: who and why (pure) -----------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """A duration as kubectl prints ages (k8s.io/apimachinery's HumanDuration)."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y{rest}d" if rest else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _since(stamp: Any, now: datetime) -> float | None:
    when = parse_time(stamp)
    return None if when is None else (now - when).total_seconds()


def _condition(body: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for condition in (body.get("status") or {}).get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return {}


@dataclass
class TargetView:
    """One (namespace, target): its holder and its live queue, from the sessions themselves."""

    namespace: str
    target: str
    holder: dict[str, Any] | None = None
    queue: list[dict[str, Any]] = field(default_factory=list)
    sessions: int = 0


def target_views(
    items: Iterable[Mapping[str, Any]], target: str, now: datetime, claims: Mapping[str, Claim | None] | None = None
) -> list[TargetView]:
    """The target's holder and queue in every namespace that has sessions for it, as the
    target module answers them (``claims``: the target's claim per namespace, where the
    user may read it)."""
    by_namespace: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        if (item.get("spec") or {}).get("target") == target:
            namespace = (item.get("metadata") or {}).get("namespace") or ""
            by_namespace.setdefault(namespace, []).append(item)
    return [
        _target_view(namespace, target, group, now, (claims or {}).get(namespace))
        for namespace, group in sorted(by_namespace.items())
    ]


def _target_view(
    namespace: str, target: str, items: list[Mapping[str, Any]], now: datetime, claim: Claim | None
) -> TargetView:
    view = TargetView(namespace, target, sessions=len(items))
    pairs = [(SessionView.from_body(i), i) for i in items]
    views = [session for session, _ in pairs]
    item_of = {id(session): item for session, item in pairs}
    holder = target_rules.holder(views, claim)
    if holder is not None:
        status = holder.status
        idle = parse_time(status.get("idleDeadline"))
        view.holder = {
            "name": holder.name,
            "uid": holder.uid,
            "owner": holder.owner.username if holder.owner is not None else None,
            "profile": holder.profile,
            "activeSince": status.get("activeSince"),
            "heldForSeconds": _seconds(_since(status.get("activeSince"), now)),
            "lastActivityTime": status.get("lastActivityTime"),
            "idleDeadline": status.get("idleDeadline"),
            "idleInSeconds": None if idle is None else _seconds((idle - now).total_seconds()),
        }
    for position, session in enumerate(target_rules.queue(views), start=1):
        item = item_of[id(session)]
        status = item.get("status") or {}
        view.queue.append({
            "position": position,
            "name": session.name,
            "uid": session.uid,
            "owner": session.owner.username if session.owner is not None else None,
            "profile": session.profile,
            "priority": session.spec.priority if session.spec is not None else 0,
            "creationTimestamp": (item.get("metadata") or {}).get("creationTimestamp"),
            "queuedSince": _condition(item, "Reconciling").get("lastTransitionTime"),
            "waitingForSeconds": _seconds(_since(_condition(item, "Reconciling").get("lastTransitionTime"), now)),
            # What its status shows (it follows within seconds; the two above are live).
            "statusPosition": status.get("queuePosition"),
            "statusHolder": (status.get("holder") or {}).get("name"),
        })
    return view


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def who_document(views: list[TargetView], target: str, namespace: str | None) -> dict[str, Any]:
    """``-o json|yaml`` for who: one target in one namespace, or ``items`` for -A."""

    def one(view: TargetView) -> dict[str, Any]:
        return {"namespace": view.namespace, "target": view.target, "holder": view.holder, "queue": view.queue}

    if namespace is None:
        return {"target": target, "items": [one(v) for v in views]}
    return one(views[0]) if views else one(TargetView(namespace, target))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns as kubectl prints them: left-aligned, three spaces apart."""
    cells = [list(header)] + [[NONE if v is None or v == "" else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _duration_cell(seconds: int | None) -> str | None:
    return None if seconds is None else human_duration(seconds)


def _deadline_cell(holder: Mapping[str, Any]) -> str | None:
    deadline, left = holder.get("idleDeadline"), holder.get("idleInSeconds")
    if not deadline:
        return None
    if left is None:
        return str(deadline)
    relative = f"in {human_duration(left)}" if left >= 0 else f"{human_duration(-left)} ago"
    return f"{deadline} ({relative})"


def render_who(views: list[TargetView], all_namespaces: bool) -> str:
    """Two tables: the holder (one row per namespace), then the live queue in order."""
    lead = ["NAMESPACE"] if all_namespaces else []
    holders = []
    for view in views:
        holder = view.holder or {}
        holders.append([*([view.namespace] if all_namespaces else []), view.target, holder.get("name"),
                        holder.get("owner"), holder.get("profile") if view.holder else None,
                        _duration_cell(holder.get("heldForSeconds")), _deadline_cell(holder), len(view.queue)])
    out = table([*lead, "TARGET", "HOLDER", "OWNER", "PROFILE", "HELD FOR", "IDLE DEADLINE", "WAITING"], holders)
    queue = [
        [*([view.namespace] if all_namespaces else []), entry["position"], entry["name"], entry["owner"],
         entry["profile"], entry["priority"], _duration_cell(entry["waitingForSeconds"])]
        for view in views
        for entry in view.queue
    ]
    if queue:
        out += "\n\n" + table([*lead, "POSITION", "NAME", "OWNER", "PROFILE", "PRIORITY", "WAITING FOR"], queue)
    return out


# What a session Rejected by a governance rule can do (kubectl session activate would
# meet the same rule).
GOVERNED = {
    "NotPermitted": "Ask a namespace admin for the verb \"preempt\" on sessions (the chart's ClusterRole "
                    "session-operator-preempt), or ask the holder's owner to release the target.",
    "Protected": "Try again once the protection window has passed, or ask the holder's owner to release it.",
    "OwnerLimit": "End one of the owner's other sessions (kubectl get sess -o wide shows owners), then "
                  "create it again.",
}


def why_paragraph(
    body: Mapping[str, Any], siblings: Iterable[Mapping[str, Any]], now: datetime, claim: Claim | None = None
) -> str:
    """The session's decision in one paragraph, from its phase, conditions and the live
    holder and queue of its target (``siblings``: the sessions of its namespace)."""
    metadata = body.get("metadata") or {}
    name, namespace = metadata.get("name", ""), metadata.get("namespace", "")
    spec, status = body.get("spec") or {}, body.get("status") or {}
    target = spec.get("target", "")
    views = target_views([*[s for s in siblings if (s.get("metadata") or {}).get("name") != name], body], target, now,
                         {namespace: claim})
    view = next((v for v in views if v.namespace == namespace), TargetView(namespace, target))
    holder = view.holder
    phase = status.get("phase")
    ready = _condition(body, "Ready")
    reason, message = ready.get("reason"), (ready.get("message") or "").rstrip(".")
    owner = (spec.get("owner") or {}).get("username") if isinstance(spec.get("owner"), Mapping) else None
    owned = f', owner "{owner}"' if owner else ""
    subject = f'Session "{name}" (namespace "{namespace}", target "{target}"{owned})'
    flag = f" -n {namespace}"
    if not phase or phase == Phase.PENDING:
        return (f"{subject} is not decided yet: no operator has written its status. Check that session-operator "
                f'runs and watches namespace "{namespace}".')
    parts: list[str] = []
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        parts.append(f"(This describes generation {observed}; the operator has not yet evaluated the latest "
                     f"spec, generation {generation}.)")
    because = f" (reason {reason})" if reason else ""
    said = f": {message}" if message else ""
    if phase == Phase.ACTIVE:
        held = _since(status.get("activeSince"), now)
        since = f"; it has held the target since {status.get('activeSince')} ({human_duration(held)})" if (
            held is not None) else ""
        parts.insert(0, f"{subject} is Active{because}{said}{since}.")
        if holder is not None and holder["name"] == name and holder.get("idleDeadline"):
            parts.append(f"Unless activity is recorded (kubectl session touch {name}{flag}), it is Abandoned at "
                         f"{_deadline_cell(holder)}.")
        if view.queue:
            parts.append(f"{_count(len(view.queue))} behind it; next: {view.queue[0]['name']}.")
        else:
            parts.append("No session waits behind it.")
    elif phase == Phase.QUEUED:
        entry = next((e for e in view.queue if e["name"] == name), None)
        place = f"number {entry['position']} of {len(view.queue)} in line" if entry else "in line"
        if holder is not None:
            of = f', owner "{holder["owner"]}"' if holder.get("owner") else ""
            behind = (f'behind "{holder["name"]}" (profile "{holder["profile"]}"{of}, active for '
                      f"{human_duration(holder['heldForSeconds'] or 0)})")
        elif "passed over while" in message:
            behind = "while nobody holds the target: " + message.split("; passed over while ", 1)[-1]
        else:
            behind = "while nobody holds the target (it is about to be promoted)"
        parts.insert(0, f"{subject} is Queued, {place} {behind}.")
        shown_holder = (status.get("holder") or {}).get("name")
        shown_position = status.get("queuePosition")
        if entry and (shown_position != entry["position"] or (holder and shown_holder != holder["name"])):
            parts.append(f'Its status still shows position {shown_position} behind "{shown_holder}"; it is '
                         "brought up to date within seconds.")
        parts.append(f"It becomes Active when the target is released and it is first in line; to take the "
                     f"target now: kubectl session activate {name}{flag}.")
    elif phase == Phase.REJECTED:
        in_the_way = (status.get("holder") or {}).get("name")
        parts.insert(0, f"{subject} is Rejected{because}{said}.")
        if reason == "DuplicateProfile" and in_the_way:
            still = " (still Active)" if holder is not None and holder["name"] == in_the_way else ""
            parts.append(f'To reuse the running session, use "{in_the_way}"{still}.')
        if reason in GOVERNED:
            parts.append(f"It stays Rejected until its spec changes. {GOVERNED[reason]}")
        else:
            parts.append(f"It stays Rejected until its spec changes; to take the target anyway: "
                         f"kubectl session activate {name}{flag}.")
    else:
        parts.insert(0, f"{subject} is {phase}{because}{said}.")
        if phase == Phase.INVALID:
            parts.append("Fix the spec to have it evaluated again.")
        elif phase == Phase.INACTIVE:
            parts.append(f"Set spec.state to Active to ask for the target again, or: kubectl session activate "
                         f"{name}{flag}.")
        if phase != Phase.INACTIVE and holder is not None:
            parts.append(f'The target is held by "{holder["name"]}" now.')
    return " ".join(parts)


def _count(n: int) -> str:
    return "1 session waits" if n == 1 else f"{n} sessions wait"


def why_document(body: Mapping[str, Any], paragraph: str) -> dict[str, Any]:
    metadata, status = body.get("metadata") or {}, body.get("status") or {}
    ready = _condition(body, "Ready")
    return {
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "target": (body.get("spec") or {}).get("target"),
        "phase": status.get("phase"),
        "reason": ready.get("reason"),
        "message": ready.get("message"),
        "holder": (status.get("holder") or {}).get("name"),
        "why": paragraph,
    }


def dump(document: Any, output: str) -> str:
    if output == "json":
        return json.dumps(document, indent=4, ensure_ascii=False)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).rstrip("\n")


# --- errors ----------------------------------------------------------------------------------


def api_problem(error: ApiError, *, verb: str, namespace: str | None, name: str | None = None,
                server: str = "") -> str:
    """One message for a failed request, naming the problem and the fix."""
    where = f'in namespace "{namespace}"' if namespace else "in all namespaces"
    scope = f"-n {namespace}" if namespace else "-A"
    if error.status == 404:
        if name and f'"{name}" not found' in error.message:
            return (f'Error from server (NotFound): session "{name}" not found in namespace "{namespace}"; list '
                    f"the sessions there with: kubectl get sess {scope}")
        if namespace and f'namespaces "{namespace}" not found' in error.message:
            return (f'Error from server (NotFound): namespace "{namespace}" not found; list namespaces with: '
                    "kubectl get namespaces")
        return (f"Error from server (NotFound): this cluster does not serve {RESOURCE} (the Session CRD is not "
                "installed); install it with: kubectl apply --server-side -f charts/session-operator/crds/")
    if error.status == 403:
        return (f"Error from server (Forbidden): you may not {verb} {RESOURCE} {where}; ask for a Role that "
                f"grants it, and check with: kubectl auth can-i {verb} {RESOURCE} {scope}")
    if error.status == 401:
        return ("Error from server (Unauthorized): the API server did not accept your credentials; log in "
                "again to refresh them, or pick another context with --context")
    if error.status == 0:
        return (f"error: cannot reach the API server{f' at {server}' if server else ''}: {error.message}; check "
                "the context (kubectl config current-context) and that the cluster is up")
    if error.status == 422:
        return f"Error from server (Invalid): the API server refused the change: {error.message}"
    return f"Error from server ({error.reason}): {verb} {RESOURCE} {where}: {error.message}"


def kubeconfig_problem(explicit: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Why no kubeconfig can be loaded, before trying; None when one may be."""
    env = os.environ if environ is None else environ
    if explicit:
        if not os.path.exists(os.path.expanduser(explicit)):
            return (f'error: the kubeconfig "{explicit}" does not exist; pass --kubeconfig with a file that does, '
                    "or leave it out to use $KUBECONFIG or ~/.kube/config")
        return None
    listed = [p for p in (env.get("KUBECONFIG") or "").split(os.pathsep) if p]
    candidates = listed or [os.path.join(env.get("HOME") or os.path.expanduser("~"), ".kube", "config")]
    if any(os.path.exists(os.path.expanduser(p)) for p in candidates):
        return None
    if env.get("KUBERNETES_SERVICE_HOST"):
        return None  # in a pod: the service account
    looked = "$KUBECONFIG (" + os.pathsep.join(listed) + ")" if listed else candidates[0]
    return (f"error: no Kubernetes configuration found (looked at {looked}); point at one with --kubeconfig PATH "
            "or the KUBECONFIG environment variable, or create ~/.kube/config (your cluster's login command "
            "writes it)")


# --- acting ----------------------------------------------------------------------------------


class Client:
    """The requests the plugin makes, with errors turned into messages."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def _call(self, verb: str, namespace: str | None, name: str | None, method: str, path: str,
                    **kwargs: Any) -> dict[str, Any]:
        try:
            return await self.kube.request(method, path, **kwargs)
        except ApiError as e:
            raise PluginError(api_problem(e, verb=verb, namespace=namespace, name=name,
                                          server=self.kube.server)) from None

    async def list(self, namespace: str | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query = {"limit": PAGE}
        while True:
            page = await self._call("list", namespace, None, "GET", paths.sessions(namespace), query=query)
            items.extend(page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query = {"limit": PAGE, "continue": token}

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("get", namespace, name, "GET", paths.sessions(namespace, name))

    async def claim(self, namespace: str, target: str) -> Claim | None:
        """The target's claim Lease, which names the holder; None where there is none or
        the user may not read Leases (the holder is then the Active session, see target.py)."""
        path = paths.leases(namespace, claim_name(target))
        try:
            return Claim.from_body(await self.kube.request("GET", path))
        except ApiError:
            return None

    async def claims(self, namespaces: Iterable[str], target: str) -> dict[str, Claim | None]:
        return {namespace: await self.claim(namespace, target) for namespace in namespaces}

    async def patch(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("patch", namespace, name, "PATCH", paths.sessions(namespace, name),
                                body=dict(patch), content_type=MERGE_PATCH)


def request_token(now: datetime) -> str:
    """spec.activateRequest for a request made now: RFC 3339 with microseconds, so that two
    requests in one second are two requests."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Result:
    text: str  # the default output
    document: Any  # for -o json|yaml
    code: int = EXIT_OK
    to_stderr: bool = False  # a notice rather than a result (kubectl's "No resources found")


async def run_who(client: Client, args: argparse.Namespace, namespace: str | None) -> Result:
    items = await client.list(namespace)
    now = datetime.now(UTC)
    namespaces = {(i.get("metadata") or {}).get("namespace") or "" for i in items
                  if (i.get("spec") or {}).get("target") == args.target}
    views = target_views(items, args.target, now, await client.claims(sorted(namespaces), args.target))
    document = who_document(views, args.target, namespace)
    if not views:
        where = f'namespace "{namespace}"' if namespace else "any namespace"
        hint = "" if namespace is None else f" (kubectl session who {args.target} -A looks in every namespace)"
        return Result(f'No sessions for target "{args.target}" in {where}{hint}.', document, to_stderr=True)
    return Result(render_who(views, namespace is None), document)


async def run_why(client: Client, args: argparse.Namespace, namespace: str) -> Result:
    body = await client.get(namespace, args.name)
    siblings = await client.list(namespace)
    claim = await client.claim(namespace, str((body.get("spec") or {}).get("target") or ""))
    paragraph = why_paragraph(body, siblings, datetime.now(UTC), claim)
    return Result(paragraph, why_document(body, paragraph))


async def run_activate(client: Client, args: argparse.Namespace, namespace: str) -> Result:
    before = await client.get(namespace, args.name)  # names a missing session before changing anything
    token = request_token(datetime.now(UTC))
    patched = await client.patch(namespace, args.name, {"spec": {"state": "Active", "activateRequest": token}})
    ref = f"{KIND_NAME}/{args.name}"
    if not args.wait:
        return Result(f"{ref} activation requested (spec.activateRequest {token})", patched)
    deadline = time.monotonic() + args.timeout
    body = patched
    while (body.get("status") or {}).get("activateRequest") != token:
        if (body.get("metadata") or {}).get("uid") != (before.get("metadata") or {}).get("uid"):
            raise PluginError(f'error: session "{args.name}" in namespace "{namespace}" was deleted (or replaced by '
                              "another object of that name) while waiting")
        if time.monotonic() >= deadline:
            raise PluginError(
                f"error: the operator has not acted on the request within {args.timeout:g}s; "
                f"spec.activateRequest {token} stays set and is acted on as soon as it runs. Check that "
                f'session-operator runs and watches namespace "{namespace}", then: kubectl session why '
                f"{args.name} -n {namespace}"
            )
        await asyncio.sleep(0.2)
        body = await client.get(namespace, args.name)
    status = body.get("status") or {}
    if status.get("phase") != Phase.ACTIVE:
        siblings = await client.list(namespace)
        paragraph = why_paragraph(body, siblings, datetime.now(UTC))
        return Result(f"{ref} was activated, and is {status.get('phase')} now: {paragraph}", body, EXIT_ERROR)
    was_active = (before.get("status") or {}).get("phase") == Phase.ACTIVE
    if was_active and (before.get("status") or {}).get("activeSince") == status.get("activeSince"):
        how = "already held the target"
    elif status.get("replaces"):
        how = f'replaced "{status["replaces"]}"'
    else:
        how = "took the free target"
    return Result(f"{ref} activated ({how})", body)


async def run_touch(client: Client, args: argparse.Namespace, namespace: str) -> Result:
    stamp = format_time(datetime.now(UTC))
    body = await client.patch(namespace, args.name, {"metadata": {"annotations": {ACTIVITY_ANNOTATION: stamp}}})
    return Result(f"{KIND_NAME}/{args.name} touched (last activity {stamp})", body)


async def run_state(client: Client, args: argparse.Namespace, namespace: str) -> Result:
    state = {"complete": "Completed", "archive": "Archived"}[args.command]
    body = await client.patch(namespace, args.name, {"spec": {"state": state}})
    return Result(f"{KIND_NAME}/{args.name} {args.command}d (spec.state {state})", body)


RUNNERS = {"who": run_who, "why": run_why, "activate": run_activate, "touch": run_touch,
           "complete": run_state, "archive": run_state}


async def run(args: argparse.Namespace) -> Result:
    problem = kubeconfig_problem(args.kubeconfig)
    if problem:
        raise PluginError(problem)
    try:
        kube = await Kube.connect(args.kubeconfig, args.context, user_agent=USER_AGENT)
    except Exception as e:
        text = str(e)
        if args.context and f"name {args.context}" in text:
            raise PluginError(f'error: context "{args.context}" not found in the kubeconfig; list the contexts '
                              "with: kubectl config get-contexts") from None
        raise PluginError(f"error: cannot load the Kubernetes configuration: {text}; check the kubeconfig "
                          "(kubectl config view) or pass --kubeconfig PATH") from None
    try:
        namespace = None if args.all_namespaces else (args.namespace or kube.namespace)
        client = Client(kube)
        if args.command == "who":
            return await run_who(client, args, namespace)
        assert namespace is not None
        return await RUNNERS[args.command](client, args, namespace)
    finally:
        await kube.close()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point (``kubectl-session``)."""
    logging.getLogger("kubernetes_asyncio").setLevel(logging.ERROR)  # its "Config not found" warning
    args = parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except PluginError as e:
        print(str(e), file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    try:
        if args.output:
            print(dump(result.document, args.output))
        else:
            print(result.text, file=sys.stderr if result.to_stderr else sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # | head: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(result.code)


if __name__ == "__main__":
    main()
