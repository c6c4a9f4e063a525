"""The ``session-operator`` command: ``run`` the operator, or print its ``version``.

``run`` reads settings (flags over ``SESSION_OPERATOR_*`` variables over defaults),
configures logging, connects to the API server with the standard kubeconfig rules,
serves /metrics, /healthz and /readyz, and then either serves at once (no leader
election) or waits for the leader Lease as a ready standby and serves while it leads.

Exit codes:
    0   stopped by SIGTERM/SIGINT (the leader Lease released), or ``version``/``--help``
    1   runtime failure: cannot connect or bind a port, the operator failed, or
        leadership was lost (the pod restarts and comes back as a standby, as
        controller-runtime does)
    2   bad command line or configuration (one line on stderr naming the flag or variable)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args, get_origin

from pydantic import ValidationError
from pydantic_settings import SettingsError

from . import __version__, leader, logs, probes
from .kube import Kube
from .metrics import Metrics
from .settings import Settings

if TYPE_CHECKING:
    from .runtime import Operator

log = logging.getLogger("session_operator")

PROG = "session-operator"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
ENV_PREFIX = str(Settings.model_config.get("env_prefix") or "SESSION_OPERATOR_")
# Flags whose name is not simply the field's name with dashes.
FLAG_NAMES = {"namespaces": "--namespace"}
METAVARS = {"namespaces": "NS"}
# Durations: 15s, 1m30s or plain seconds (parsed by Settings).
DURATION_FIELDS = ("lease_duration", "renew_deadline", "retry_period", "default_archive_after", "default_delete_after")


class UsageError(Exception):
    """A bad flag or variable value; the message is one line that names it."""


# The command line -------------------------------------------------------------------------


def flag_of(field: str) -> str:
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def env_of(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _default_text(field: str) -> str:
    info = Settings.model_fields[field]
    value = info.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(value) if value else "none"
    if value == "":
        return '""'
    if field in DURATION_FIELDS and isinstance(value, float):
        return f"{value:g}s"
    return str(value)


def _help_of(field: str) -> str:
    description = (Settings.model_fields[field].description or "").replace("%", "%%")
    return f"{description} [env: {env_of(field)}; default: {_default_text(field)}]"


def _metavar_of(field: str, annotation: Any) -> str:
    if field in METAVARS:
        return METAVARS[field]
    if field in DURATION_FIELDS:
        return "DURATION"
    if field.endswith("_port"):
        return "PORT"
    if annotation is int:
        return "N"
    return field.split("_")[-1].upper()


def _add_setting_flag(parser: argparse.ArgumentParser, field: str) -> None:
    annotation = Settings.model_fields[field].annotation
    common: dict[str, Any] = {"dest": field, "default": argparse.SUPPRESS, "help": _help_of(field)}
    if annotation is bool:
        parser.add_argument(flag_of(field), action=argparse.BooleanOptionalAction, **common)
    elif get_origin(annotation) is list:
        parser.add_argument(flag_of(field), action="append", metavar=_metavar_of(field, annotation), **common)
    elif get_origin(annotation) is Literal:
        # Values are checked by Settings (one error path, one message style for all).
        choices = ",".join(str(choice) for choice in get_args(annotation))
        parser.add_argument(flag_of(field), metavar="{" + choices + "}", **common)
    else:
        parser.add_argument(flag_of(field), metavar=_metavar_of(field, annotation), **common)


def build_parser() -> argparse.ArgumentParser:
    """``session-operator {run,version}``; the top-level help includes every ``run`` option."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A Kubernetes operator that keeps at most one active Session per target.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=_distribution_version_text(), help="Print the version and exit."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="Run the operator (options below).",
        description="Run the operator: reconcile Sessions, at most one Active session per target. "
        f"Flags override {ENV_PREFIX}* environment variables, which override the defaults.",
    )
    for field in Settings.model_fields:
        _add_setting_flag(run, field)
    run.add_argument(
        "--kubeconfig",
        metavar="PATH",
        default=None,
        help="Kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else the in-cluster service account]",
    )
    commands.add_parser("version", help="Print the version and exit.", description="Print the version and exit.")
    parser.epilog = f"options of '{PROG} run':\n" + _options_section(run)
    return parser


def _options_section(parser: argparse.ArgumentParser) -> str:
    text = parser.format_help()
    marker = "options:\n"
    return text[text.index(marker) + len(marker) :] if marker in text else text


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    given = {field: getattr(args, field) for field in Settings.model_fields if hasattr(args, field)}
    if "namespaces" in given:  # --namespace a --namespace b,c -> [a, b, c], like the env variable
        given["namespaces"] = [part.strip() for value in given["namespaces"] for part in value.split(",")]
        given["namespaces"] = [part for part in given["namespaces"] if part]
    return given


def _where(field: str, given: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    if field in given:
        return flag_of(field)
    if env_of(field) in {key.upper() for key in environ}:
        return env_of(field)
    return f"{flag_of(field)} ({env_of(field)})"


def load_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the given flags over the environment; UsageError names what is wrong."""
    env = os.environ if environ is None else environ
    given = _given_settings(args)
    try:
        settings = Settings(**given)
    except ValidationError as e:
        problems = []
        for error in e.errors(include_url=False):
            field = str(error["loc"][0]) if error.get("loc") else ""
            message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
            where = _where(field, given, env) if field in Settings.model_fields else field or "settings"
            value = error.get("input")
            quoted = isinstance(value, str) and f'"{value}"' in message  # the message shows it already
            shown = f" (got {value!r})" if isinstance(value, str | int | float) and not quoted else ""
            problems.append(f"{where}: {message}{shown}")
        raise UsageError("; ".join(problems)) from None
    except SettingsError as e:
        raise UsageError(f"environment: {e}") from None
    if settings.leader_elect:
        problem = leader.check_timings(settings.lease_duration, settings.renew_deadline, settings.retry_period)
        if problem:
            fields = ("lease_duration", "renew_deadline", "retry_period")
            where = ", ".join(_where(field, given, env) for field in fields)
            raise UsageError(f"{where}: {problem}")
    return settings


# Running ----------------------------------------------------------------------------------


class _Signals:
    """SIGTERM/SIGINT set ``stop``; a second one cancels the run at once.

    (kopf runs on a thread of its own, where it installs no signal handlers, so these
    stay the only ones.)
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, stop: asyncio.Event, main_task: asyncio.Task[Any]) -> None:
        self.stop = stop
        self.main_task = main_task
        self.received = 0
        self.installed: list[signal.Signals] = []

    def on_signal(self, signum: signal.Signals) -> None:
        self.received += 1
        if self.received > 1:
            log.warning("Received %s again; exiting without cleanup", signum.name)
            self.main_task.cancel()
            return
        log.info("Received %s; shutting down", signum.name)
        self.stop.set()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / platform
                loop.add_signal_handler(signum, self.on_signal, signum)
                if signum not in self.installed:
                    self.installed.append(signum)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in self.installed:
            loop.remove_signal_handler(signum)
        self.installed.clear()


async def run(settings: Settings, kubeconfig: str | None = None) -> int:
    """The ``run`` command once settings and logging are in place; returns the exit code."""
    # Imported here, not at the top: it brings kopf, which is heavy, and --help, --version
    # or a usage error should not need it. An ordinary import, so that mypy checks its use.
    from .runtime import Operator

    stop = asyncio.Event()
    readiness = probes.Readiness(leader_election=settings.leader_elect)
    current = asyncio.current_task()
    assert current is not None
    signals = _Signals(stop, current)
    signals.install()
    namespaces = ", ".join(settings.namespaces) or "all"
    log.info("Starting %s %s (namespaces: %s)", PROG, __version__, namespaces)
    try:
        try:
            kube = await Kube.connect(kubeconfig)
        except Exception as e:
            log.error("Could not load the Kubernetes configuration: %s", e)
            return EXIT_FAILURE
        readiness.connected = True
        try:
            return await _run_connected(settings, kube, readiness, stop, Operator)
        finally:
            readiness.connected = False
            await kube.close()
    finally:
        signals.remove()


async def _run_connected(
    settings: Settings, kube: Kube, readiness: probes.Readiness, stop: asyncio.Event, operator_type: type[Operator]
) -> int:
    problem = webhook_tls_problem(settings)
    if problem:
        log.error("Could not serve the admission webhook: %s", problem)
        return EXIT_FAILURE
    metrics = Metrics()
    try:
        servers = await probes.start(settings, readiness, metrics)
    except OSError as e:
        log.error("Could not serve metrics and health probes on %s: %s", settings.bind_address, e)
        return EXIT_FAILURE
    try:
        operator = operator_type(settings, kube, metrics=metrics, readiness=readiness)
        elector = None
        if settings.leader_elect:
            elector = leader.LeaderElector(settings, kube)
            readiness.leader = lambda: elector.holder if elector is not None else ""
            log.info("Waiting for leader lease %s as %s", elector.lease_ref, elector.identity)
        else:
            log.info("Leader election is off; serving at once")
        try:
            await operator.run(stop, elector)
        except leader.LeadershipLost:
            assert elector is not None
            log.error("Lost leadership of lease %s; exiting", elector.lease_ref)
            return EXIT_FAILURE
        if not stop.is_set():
            log.error("The operator stopped by itself; exiting")
            return EXIT_FAILURE
        return EXIT_OK
    except Exception:
        log.exception("The operator failed")
        return EXIT_FAILURE
    finally:
        readiness.shutting_down = True
        await servers.stop()
        log.info("Stopped")


def webhook_tls_problem(settings: Settings) -> str | None:
    """Why the webhook's certificate and key cannot be served, or None (also when there is
    no webhook). Checked before anything starts, so that a wrong mount fails at once, with
    the file named, rather than inside kopf's thread."""
    if not settings.webhook_port:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.webhook_cert_file, settings.webhook_key_file)
    except (OSError, ssl.SSLError) as e:
        return f"certificate {settings.webhook_cert_file} with key {settings.webhook_key_file}: {e}"
    return None


def _version_text() -> str:
    try:
        kopf_version = metadata.version("kopf")
    except metadata.PackageNotFoundError:
        kopf_version = "unknown"
    return f"{PROG} {__version__} (kopf {kopf_version}, Python {sys.version.split()[0]})"


def _distribution_version_text() -> str:
    try:
        version = metadata.version(PROG)
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        version = __version__
    return f"{PROG} {version}"


def _fail_usage(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point; always leaves through SystemExit with the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(_version_text())
        sys.exit(EXIT_OK)
    try:
        settings = load_settings(args)
    except UsageError as e:
        _fail_usage(str(e))
    logs.configure(settings.log_format, settings.log_level)
    try:
        code = asyncio.run(run(settings, args.kubeconfig))
    except asyncio.CancelledError:  # a second signal
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        code = EXIT_FAILURE
    sys.exit(code)


if __name__ == "__main__":
    main()
