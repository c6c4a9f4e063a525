"""The only module that imports kopf: the framework that runs beside the operator's work.

kopf logs in with the operator's own credentials and runs for the whole life of the
process, on every replica, where it also serves the advisory admission webhook
(``@kopf.on.validate``, when a webhook port is set). It does not watch sessions or
claims: the operator's informers do that (``informer.py``), because kopf handles every
watch event in a per-object worker (about 1 ms of CPU each, measured, four events per
new session), and because its indices wait for every object's worker at start-up, which
stalls for ever above ``queueing.worker_limit`` objects (kopf issue
#1243). Every kopf setting that differs from its default says why below.

The webhook's answers come from the operator's cache, which lives on the operator's
event loop; kopf's handler runs on kopf's. So the handler hands the decision
(``admission.review_create``, through the operator's ``admit``) to the operator's loop and
waits for it at most ``ADMISSION_BOUND``: an API server must never wait on a busy
operator, and an advisory answer that cannot be given in time is "allowed, could not check".
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from . import admission
from .model import ANNOTATION_PREFIX, GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

Credentials = Callable[[], Coroutine[Any, Any, dict[str, Any]]]
Admit = Callable[[admission.Request], Coroutine[Any, Any, admission.Admission]]

# kopf routes a request by the last segment of its path to the handler of that id, so the
# ValidatingWebhookConfiguration's URL or service path must end with it.
WEBHOOK_ID = "validate-session"
WEBHOOK_PATH = f"/{WEBHOOK_ID}"
# The mutating webhook that records spec.owner, for servers without a
# MutatingAdmissionPolicy (before Kubernetes 1.34, or where it is off).
MUTATING_WEBHOOK_ID = "mutate-session"
MUTATING_WEBHOOK_PATH = f"/{MUTATING_WEBHOOK_ID}"
# How long the handler waits for the operator's loop to answer from its cache. A review
# costs microseconds; only a loop busy with something long (a relist of thousands of
# sessions) takes longer, and then "could not check" is the honest, advisory answer,
# well within the API server's own timeout (timeoutSeconds, 2-5 s).
ADMISSION_BOUND = 0.5


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where and how the admission webhook is served: HTTPS with a certificate from files
    (a mounted Secret, made by the chart or by cert-manager), re-read when they change."""

    port: int
    cert_file: str
    key_file: str
    bind_address: str = "0.0.0.0"
    bound: float = ADMISSION_BOUND


def kopf_settings(webhook: Webhook | None = None) -> kopf.OperatorSettings:
    config = kopf.OperatorSettings()
    # Leader election is ours (a Lease, with fencing); kopf's peering is not leader
    # election, so it is switched off.
    config.peering.standalone = True
    # kopf would list and watch Namespaces (with --namespace) and CRDs to find what to
    # serve; it serves no resources here, and the operator should need no RBAC for those.
    config.scanning.disabled = True
    # kopf keeps its own bookkeeping in annotations under our prefix, never in status
    # (no change-detecting handlers are registered, so in practice it writes none).
    config.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    config.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    config.persistence.finalizer = f"{ANNOTATION_PREFIX}/kopf"
    # Events are the operator's: one per transition. kopf's per-handler ones would be noise.
    config.posting.enabled = False
    config.networking.request_timeout = 60
    config.networking.connect_timeout = 10
    if webhook is not None:
        # TLS from files only: kopf's self-signed certificate is for development, and the
        # API server must trust the CA the chart (or cert-manager) puts in caBundle.
        config.admission.server = kopf.WebhookServer(
            addr=webhook.bind_address,
            port=webhook.port,
            certfile=webhook.cert_file,
            pkeyfile=webhook.key_file,
        )
        # The chart owns the ValidatingWebhookConfiguration (its failurePolicy, timeout,
        # namespaceSelector and caBundle): kopf must not write one, and needs no RBAC to.
        config.admission.managed = None
    return config


def registry(credentials: Credentials, admit: Admit | None = None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # The same kubeconfig / in-cluster credentials the rest of the operator uses.
        return kopf.ConnectionInfo(**await credentials())

    if admit is not None:
        # operations= only shapes a configuration kopf would manage; kopf calls the
        # handler for whatever the API server sends, so the handler checks it too.
        @kopf.on.validate(
            GROUP, VERSION, PLURAL, id=WEBHOOK_ID, operations=["CREATE", "UPDATE"], registry=registry
        )
        async def validate_session(**kwargs: Any) -> None:
            # (kwargs: kopf's WebhookFn protocol names every argument it may pass.)
            if kwargs.get("operation") not in ("CREATE", "UPDATE") or kwargs.get("subresource"):
                return
            warnings: list[str] = kwargs["warnings"]  # kopf sends these back as Warning headers
            try:
                answer = await admit(request_of(kwargs))
            except Exception as e:  # advisory: never fail a request because the check did
                log.warning("Could not check the creation of a session at admission: %r", e)
                answer = admission.unchecked("the check failed")
            warnings.extend(answer.warnings)
            if not answer.allowed:
                raise kopf.AdmissionError(answer.message, code=answer.code)

        @kopf.on.mutate(
            GROUP, VERSION, PLURAL, id=MUTATING_WEBHOOK_ID, operations=["CREATE", "UPDATE"], registry=registry
        )
        async def record_owner(**kwargs: Any) -> None:
            # Pure and on kopf's own loop: it needs nothing of the operator's cache.
            if kwargs.get("subresource"):
                return
            owner = admission.owner_to_record(request_of(kwargs))
            if owner is not None:
                kwargs["patch"].setdefault("spec", {})["owner"] = owner

    return registry


def request_of(kwargs: Mapping[str, Any]) -> admission.Request:
    old = kwargs.get("old")
    return admission.Request(
        operation=str(kwargs.get("operation") or ""),
        body=dict(kwargs["body"]),
        old=dict(old) if old is not None else None,
        user=admission.user_of(kwargs.get("userinfo")),
    )


class _NotOnMainThread(logging.Filter):
    """kopf warns that it ignores OS signals off the main thread: that is the point here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("OS signals are ignored")


class _DenialsAreAnswers(logging.Filter):
    """kopf logs an ERROR for every handler that raises, and a denial is raised
    (``AdmissionError``); it is an answer, not a failure, and the operator logs it itself."""

    PREFIX = f"Webhook {WEBHOOK_ID!r} failed permanently: "

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIX)


class KopfThread:
    """kopf on a thread and event loop of its own.

    kopf assumes it owns its loop: it installs SIGINT/SIGTERM handlers (in the main
    thread), and when it stops it cancels every task created after it started. On its
    own thread it does neither to the operator, whose loop keeps its own signal handling
    and its orderly shutdown. What kopf needs of the operator (the credentials) it gets
    by running the operator's coroutine on the operator's loop; so do admission reviews.
    """

    def __init__(
        self,
        credentials: Credentials,
        namespaces: Sequence[str],
        *,
        webhook: Webhook | None = None,
        admit: Admit | None = None,
    ) -> None:
        self._credentials = credentials
        self._namespaces = list(namespaces)
        self._webhook = webhook
        self._admit = admit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> asyncio.Future[None]:
        """Start kopf; the future resolves (in the caller's loop) when kopf has ended."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def report(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        async def credentials() -> dict[str, Any]:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._credentials(), loop))

        webhook, operator_admit = self._webhook, self._admit
        admit: Admit | None = None
        if webhook is not None and operator_admit is not None:
            admit = across_loops(operator_admit, loop, webhook.bound)
            log.info(
                "Serving the admission webhook on https://%s:%d%s",
                webhook.bind_address, webhook.port, WEBHOOK_PATH,
            )

        def main() -> None:
            error: BaseException | None = None
            try:
                asyncio.run(kopf.operator(
                    registry=registry(credentials, admit),
                    settings=kopf_settings(webhook if admit is not None else None),
                    standalone=True,
                    clusterwide=not self._namespaces,
                    namespaces=self._namespaces,
                    stop_flag=self._stop,
                ))
            except BaseException as e:  # reported to the operator's loop, which decides
                error = e
            if not loop.is_closed():
                loop.call_soon_threadsafe(report, error)

        logging.getLogger("kopf._core.reactor.running").addFilter(_NotOnMainThread())
        logging.getLogger("kopf.objects").addFilter(_DenialsAreAnswers())
        self._thread = threading.Thread(target=main, name="kopf", daemon=True)
        self._thread.start()
        return done

    async def stop(self, wait: float = 1.5) -> None:
        """Ask kopf to stop and give it ``wait`` seconds. kopf then waits up to 5 s more for
        its own tasks, such as discovery requests retrying against an API server that is
        gone; nothing of those matters once the operator stops, so its thread (a daemon)
        is left to the process exit rather than holding up a SIGTERM."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, wait)
            if thread.is_alive():
                log.info("kopf has not stopped within %.1fs; leaving it to the process exit", wait)


def across_loops(admit: Admit, loop: asyncio.AbstractEventLoop, bound: float) -> Admit:
    """``admit`` as a coroutine function for another thread's loop: it runs on ``loop`` (the
    operator's, where the cache lives) and is awaited at most ``bound`` seconds; past that,
    or when the operator's loop is gone, the answer is "allowed, could not check"."""

    async def admit_across(request: admission.Request) -> admission.Admission:
        review = admit(request)
        try:
            future = asyncio.run_coroutine_threadsafe(review, loop)
        except RuntimeError:  # the operator's loop is closed: shutting down
            review.close()
            return admission.unchecked("the operator is stopping")
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), bound)
        except TimeoutError:
            future.cancel()
            return admission.unchecked(f"the operator did not answer within {bound * 1000:.0f} ms")

    return admit_across
