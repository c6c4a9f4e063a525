"""Mutating and validating admission webhooks (``admissionregistration.k8s.io/v1``), called as
kube-apiserver v1.24 calls them, and the ``Warning`` response headers they lead to.

The API semantics (:mod:`.api`) are synchronous, and a webhook call is not: a write runs as
an *attempt*. Where kube-apiserver runs mutating admission (after decoding, before the
registry fills the object in and validates it) :meth:`Admission.mutate` walks the mutating
webhooks that match, in order, each on the object the previous ones left; where it runs
validating admission (after defaulting and validation, before storing) :meth:`Admission.check`
finds the validating webhooks that match. A webhook not yet called for this exact object
raises :class:`AdmissionRequired`; the server then calls it (a mutating webhook alone, the
validating ones concurrently, as kube-apiserver does), records what it answered, and makes
the attempt again from the start, now against the current state. When the object is the
same as before, the recorded answer stands (a denial is raised, an allowance lets the write
go on, a patch gives the same object); when the state changed meanwhile, the webhooks are
called again, as kube-apiserver's optimistic retries do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import dataclasses
import ipaddress
import json
import logging
import ssl
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import gopatch
from .errors import ApiError, bad_request, go_json_kind, internal_error
from .resources import DecodeError, ResourceType

log = logging.getLogger("kube_emulator")

VWC_KEY = ("admissionregistration.k8s.io", "validatingwebhookconfigurations")
MWC_KEY = ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
CONFIGURATION_KEYS = (VWC_KEY, MWC_KEY)  # never sent to webhooks
NAMESPACES = ("", "v1", "namespaces")
# The one user the emulator authenticates (its bearer token), as a webhook sees it.
USER_INFO: dict[str, Any] = {"username": "admin", "uid": "admin", "groups": ["system:masters", "system:authenticated"]}
USER_AGENT = "kube-apiserver-admission"
REVIEW_VERSIONS = ("v1", "v1beta1")
_OPTION_FIELDS = ("dryRun", "fieldManager", "fieldValidation")
_DELETE_OPTION_FIELDS = ("gracePeriodSeconds", "preconditions", "orphanDependents", "propagationPolicy")
_STATUS_DETAILS = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")
_CAUSE_FIELDS = ("reason", "message", "field")


# --------------------------------------------------------------------------- Warning headers

_WARNINGS_TOTAL_RUNES = 4 * 1024
_WARNING_ITEM_RUNES = 256


def warning_headers(texts: list[str]) -> list[str]:
    """``Warning`` header values for ``texts``, as kube-apiserver's warning recorder writes them:
    ``299 - "text"`` with ``"`` and ``\\`` escaped; empty and repeated texts, and texts with
    control characters, dropped; past 4096 characters in all, each text cut to 256 characters
    and the ones that no longer fit dropped."""
    recorded: set[str] = set()
    ordered: list[str] = []
    out: list[str] = []
    written = 0
    truncating = False
    for text in texts:
        if not text:
            continue
        if written >= _WARNINGS_TOTAL_RUNES and truncating:
            break
        if text in recorded:
            continue
        recorded.add(text)
        ordered.append(text)
        if truncating and len(text) > _WARNING_ITEM_RUNES:
            text = text[:_WARNING_ITEM_RUNES]
        if not _valid_warning(text):
            continue
        if written + len(text) <= _WARNINGS_TOTAL_RUNES or truncating:
            written += len(text)
            out.append(_warning_header(text))
            continue
        truncating = True
        written = 0
        out = []
        for earlier in ordered:
            earlier = earlier[:_WARNING_ITEM_RUNES]
            if _valid_warning(earlier):
                written += len(earlier)
                out.append(_warning_header(earlier))
    return out


def _valid_warning(text: str) -> bool:
    return not any(unicodedata.category(char) == "Cc" for char in text)


def _warning_header(text: str) -> str:
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- the request being admitted


@dataclass
class Attributes:
    """What kube-apiserver's ``admission.Attributes`` carry, for one write."""

    operation: str  # CREATE, UPDATE, DELETE
    rt: ResourceType
    version: str  # the request's version
    subresource: str
    namespace: str  # "" for cluster-scoped objects; a Namespace's own name for namespaces
    name: str
    obj: dict[str, Any] | None  # storage form
    old: dict[str, Any] | None  # storage form
    delete_options: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False


@dataclass
class Invocation:
    """A webhook to call, and the resource (and so the version of the object) it is called for."""

    configuration: str
    hook: dict[str, Any]
    rt: ResourceType
    group: str
    version: str
    plural: str


class AdmissionRequired(Exception):
    """Raised by :meth:`Admission.check` or :meth:`Admission.mutate` out of a write attempt:
    these webhooks (one, if ``mutating``) must be called first."""

    def __init__(
        self,
        key: str,
        attrs: Attributes,
        invocations: list[Invocation],
        reviews: list[dict[str, Any]],
        mutating: bool = False,
    ):
        super().__init__(f"{attrs.operation} needs {len(invocations)} webhook(s)")
        self.key = key
        self.attrs = attrs
        self.invocations = invocations
        self.reviews = reviews  # the AdmissionRequest of each invocation (uid added when called)
        self.mutating = mutating


@dataclass
class Mutation:
    """What one mutating webhook call came to: an error to raise, or the object its patch made
    (storage form; None: unchanged) and whether that differs from what it was sent."""

    error: ApiError | None = None
    obj: dict[str, Any] | None = None
    changed: bool = False


class Admission:
    """Mutating and validating admission for one API request (see the module docstring)."""

    def __init__(self, api: Any, client: WebhookClient, params: dict[str, str], dry_run: bool) -> None:
        self.api = api
        self.client = client
        self.params = params
        self.dry_run = dry_run
        self.warnings: list[str] = []
        self._decided: dict[str, ApiError | None] = {}  # fingerprint -> the denial or failure, or None
        self._mutations: dict[str, Mutation] = {}  # fingerprint and webhook -> what its call came to
        self._identity: dict[str, Any] | None = None
        self.collection: dict[str, Any] = {}  # a deletecollection's listing and progress (api.py)

    def same_identity(self, meta: dict[str, Any], generated: bool) -> None:
        """A create made again keeps the uid, creationTimestamp (and generated name) the webhooks
        saw the first time, as kube-apiserver sets them once, before calling them."""
        if self._identity is None:
            self._identity = {k: meta[k] for k in ("uid", "creationTimestamp") if k in meta}
            if generated:
                self._identity["name"] = meta["name"]
        else:
            meta.update(self._identity)

    # ------------------------------------------------------------------ matching (in the attempt)

    def check(self, attrs: Attributes) -> None:
        """Return if no webhook matches or they allowed this request; raise their denial or
        failure (an :class:`ApiError`), or :class:`AdmissionRequired`."""
        attrs.dry_run = self.dry_run
        invocations = self.invocations(attrs)
        if not invocations:
            return
        key = _fingerprint(attrs)
        if key not in self._decided:
            reviews = [self._request(inv, attrs) for inv in invocations]
            raise AdmissionRequired(key, attrs, invocations, reviews)
        error = self._decided[key]
        if error is not None:
            raise error

    def invocations(self, attrs: Attributes) -> list[Invocation]:
        if attrs.rt.storage_key in CONFIGURATION_KEYS:
            return []  # webhook configurations are never sent to webhooks
        out = []
        for configuration, _, hook in self._hooks(VWC_KEY):
            invocation = self._match(configuration, hook, attrs)
            if invocation is not None:
                out.append(invocation)
        return out

    def _hooks(self, key: tuple[str, str]) -> list[tuple[str, int, dict[str, Any]]]:
        """The webhooks of the configurations of ``key``: (configuration, index, webhook), in
        the order kube-apiserver calls them (configurations by name, then webhook order)."""
        configurations = sorted(self.api.store.bucket(key).iter_objects(None), key=lambda c: c["metadata"]["name"])
        return [
            (configuration["metadata"]["name"], index, hook)
            for configuration in configurations
            for index, hook in enumerate(configuration.get("webhooks") or [])
        ]

    def mutate(self, attrs: Attributes) -> tuple[dict[str, Any] | None, bool]:
        """Mutating admission of ``attrs``: the object the matching mutating webhooks' patches
        leave (storage form), and whether any patch was applied; raises a webhook's denial or
        failure (an :class:`ApiError`), or :class:`AdmissionRequired` for the next webhook.

        Webhooks are matched and called one after the other, each on the object as the
        previous ones left it. With ``reinvocationPolicy: IfNeeded``, a webhook called before
        a later one changed the object is called once more, in a second round (the
        ``webhookReinvokeContext`` of kube-apiserver's mutating dispatcher)."""
        attrs.dry_run = self.dry_run
        if attrs.rt.storage_key in CONFIGURATION_KEYS:
            return attrs.obj, False
        hooks = self._hooks(MWC_KEY)
        patched = False
        previously: set[tuple[str, int]] = set()  # IfNeeded webhooks called since the last change
        reinvoke: set[tuple[str, int]] = set()
        should_reinvoke = False
        for round_ in (0, 1):
            if round_ and not should_reinvoke:
                break
            for configuration, index, hook in hooks:
                invocation = self._match(configuration, hook, attrs)
                if invocation is None or (round_ and (configuration, index) not in reinvoke):
                    continue
                key = _fingerprint(attrs) + json.dumps([configuration, index, hook, round_], sort_keys=True)
                outcome = self._mutations.get(key)
                if outcome is None:
                    raise AdmissionRequired(key, attrs, [invocation], [self._request(invocation, attrs)], True)
                if outcome.changed:
                    reinvoke |= previously
                    previously = set()
                    should_reinvoke = True
                if hook.get("reinvocationPolicy") == "IfNeeded":
                    previously.add((configuration, index))
                if outcome.error is not None:
                    raise outcome.error
                if outcome.obj is not None:
                    attrs = dataclasses.replace(attrs, obj=outcome.obj)
                    patched = True
        return (copy.deepcopy(attrs.obj) if patched else attrs.obj), patched

    def _match(self, configuration: str, hook: dict[str, Any], attrs: Attributes) -> Invocation | None:
        if not self._namespace_matches(hook, attrs):
            return None
        selector = hook.get("objectSelector") or {}
        if not _selector_empty(selector) and not any(
            obj is not None and _selector_matches(selector, obj["metadata"].get("labels") or {})
            for obj in (attrs.obj, attrs.old)
        ):
            return None
        rt = attrs.rt
        requested = (rt.group, attrs.version, rt.plural)
        for rule in hook.get("rules") or []:
            if _rule_matches(rule, attrs, requested):
                return Invocation(configuration, hook, rt, *requested)
        if hook.get("matchPolicy", "Equivalent") != "Equivalent":
            return None
        equivalents = [
            (key, other)
            for key, other in self.api.types.items()
            if other.storage_key == rt.storage_key and key != requested
        ]
        for rule in hook.get("rules") or []:
            for key, other in equivalents:
                if _rule_matches(rule, attrs, key):
                    return Invocation(configuration, hook, other, *key)
        return None

    def _namespace_matches(self, hook: dict[str, Any], attrs: Attributes) -> bool:
        is_namespace = (attrs.rt.group, attrs.rt.plural) == ("", "namespaces")
        if not attrs.namespace and not is_namespace:
            return True
        selector = hook.get("namespaceSelector") or {}
        if _selector_empty(selector):
            return True
        if is_namespace and not attrs.subresource and attrs.operation in ("CREATE", "UPDATE") and attrs.obj:
            labels = attrs.obj["metadata"].get("labels") or {}
        else:
            namespace = self.api.store.bucket(("", "namespaces")).get("", attrs.namespace)
            if namespace is None:
                return False
            labels = namespace["metadata"].get("labels") or {}
        return _selector_matches(selector, labels)

    def _request(self, invocation: Invocation, attrs: Attributes) -> dict[str, Any]:
        """The AdmissionRequest (without uid): the object in the version the webhook's rule named."""
        rt = attrs.rt
        request: dict[str, Any] = {
            "kind": {"group": invocation.group, "version": invocation.version, "kind": invocation.rt.kind},
            "resource": {"group": invocation.group, "version": invocation.version, "resource": invocation.plural},
        }
        if attrs.subresource:
            request["subResource"] = attrs.subresource
        request["requestKind"] = {"group": rt.group, "version": attrs.version, "kind": rt.kind}
        request["requestResource"] = {"group": rt.group, "version": attrs.version, "resource": rt.plural}
        if attrs.subresource:
            request["requestSubResource"] = attrs.subresource
        if attrs.name:
            request["name"] = attrs.name
        if attrs.namespace:
            request["namespace"] = attrs.namespace
        request["operation"] = attrs.operation
        request["userInfo"] = json.loads(json.dumps(USER_INFO))
        for key, obj in (("object", attrs.obj), ("oldObject", attrs.old)):
            if obj is None:
                request[key] = None
                continue
            shown = json.loads(json.dumps(self.api.present(invocation.rt, invocation.version, obj)))
            # the Go struct's zero Time, in an object the registry has not filled in yet
            shown.setdefault("metadata", {}).setdefault("creationTimestamp", None)
            request[key] = shown
        request["dryRun"] = attrs.dry_run
        request["options"] = self._options(attrs)
        return request

    def _options(self, attrs: Attributes) -> dict[str, Any]:
        if attrs.operation == "DELETE":
            options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"}
            for key in _DELETE_OPTION_FIELDS:
                value = attrs.delete_options.get(key)
                if value is None:
                    continue
                if key == "gracePeriodSeconds":
                    try:
                        value = int(value)
                    except (TypeError, ValueError):
                        continue
                options[key] = value
            if self.dry_run:
                options["dryRun"] = ["All"]
            return options
        kind = "CreateOptions" if attrs.operation == "CREATE" else "UpdateOptions"
        options = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
        if self.dry_run:
            options["dryRun"] = ["All"]
        for key in _OPTION_FIELDS[1:]:
            if self.params.get(key):
                options[key] = self.params[key]
        return options

    # ------------------------------------------------------------------ calling (between attempts)

    async def call(self, need: AdmissionRequired) -> None:
        """Call the webhooks ``need`` names, concurrently; record the first denial or failure
        (or, for a mutating webhook, what its call came to)."""
        if need.mutating:
            self._mutations[need.key] = await self._call_mutating(need.invocations[0], need.reviews[0], need.attrs)
            return
        results = await asyncio.gather(
            *(self._call(inv, review, need.attrs) for inv, review in zip(need.invocations, need.reviews, strict=True))
        )
        error: ApiError | None = None
        for failure, warnings in results:
            self.warnings.extend(warnings)
            if failure is not None and error is None:
                error = failure
        self._decided[need.key] = error

    async def _exchange(
        self, invocation: Invocation, request: dict[str, Any], attrs: Attributes, mutating: bool
    ) -> tuple[dict[str, Any] | None, ApiError | None]:
        """POST the AdmissionReview and verify the answer: (the response, None), or (None, the
        error to fail the request with), or (None, None) when a failure is ignored
        (``failurePolicy: Ignore``). The response's ``patch`` is decoded to bytes, and its
        ``patchType`` is JSONPatch for a v1beta1 review with a patch."""
        hook = invocation.hook
        name = hook.get("name", "")
        if attrs.dry_run and hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
            return None, bad_request(f'admission webhook "{name}" does not support dry run')
        version = next((v for v in hook.get("admissionReviewVersions") or [] if v in REVIEW_VERSIONS), None)
        if version is None:
            return None, _failed(
                hook,
                "could not create admission objects: webhook does not accept known AdmissionReview versions "
                "(v1, v1beta1)",
            )
        uid = str(uuid.uuid4())
        review = {
            "kind": "AdmissionReview",
            "apiVersion": f"admission.k8s.io/{version}",
            "request": {"uid": uid, **request},
        }
        try:
            answer = _decode_patch_fields(await self.client.post(hook, review))
        except CallError as exc:
            return None, _failed(hook, f"failed to call webhook: {exc}")
        try:
            return _verify(uid, version, answer, mutating), None
        except CallError as exc:
            return None, _failed(hook, f"received invalid webhook response: {exc}")

    async def _call(
        self, invocation: Invocation, request: dict[str, Any], attrs: Attributes
    ) -> tuple[ApiError | None, list[str]]:
        response, failure = await self._exchange(invocation, request, attrs, mutating=False)
        if response is None:
            return failure, []
        warnings = [w for w in response.get("warnings") or [] if isinstance(w, str)]
        if response.get("allowed") is True:
            return None, warnings
        return _denial(invocation.hook.get("name", ""), response.get("status")), warnings

    async def _call_mutating(self, invocation: Invocation, request: dict[str, Any], attrs: Attributes) -> Mutation:
        """``callAttrMutatingHook``: call the webhook, apply its JSON patch to the object it was
        sent, decode and default the result."""
        response, failure = await self._exchange(invocation, request, attrs, mutating=True)
        if response is None:
            return Mutation(error=failure)
        hook = invocation.hook
        name = hook.get("name", "")
        self.warnings.extend(w for w in response.get("warnings") or [] if isinstance(w, str))
        if response.get("allowed") is not True:
            return Mutation(error=_denial(name, response.get("status")))
        raw: bytes = response["patch"]
        if not raw:
            return Mutation()
        try:
            operations = gopatch.decode_patch(raw)
        except gopatch.PatchError as exc:
            return Mutation(error=internal_error(str(exc)))
        if not operations:
            return Mutation()
        if attrs.obj is None:
            return Mutation(
                error=internal_error(
                    f'admission webhook "{name}" attempted to modify the object, which is not supported for this '
                    "operation"
                )
            )
        if response["patchType"] != "JSONPatch":
            return Mutation(error=_failed(hook, f'unsupported patch type "{response["patchType"]}"'))
        sent = request["object"]
        try:
            patched = gopatch.apply_patch(sent, operations)
        except gopatch.PatchError as exc:
            return Mutation(error=internal_error(str(exc)))
        try:
            obj, decoded = _decode_mutated(invocation, patched)
        except ApiError as exc:
            return Mutation(error=exc)
        return Mutation(obj=obj, changed=decoded != sent)


def _failed(hook: dict[str, Any], reason: str) -> ApiError | None:
    """A webhook that could not be called (``ErrCallingWebhook``): the request fails with a 500,
    unless the webhook's ``failurePolicy`` is Ignore."""
    name = hook.get("name", "")
    if hook.get("failurePolicy") == "Ignore":
        log.info("Failed calling webhook, failing open %s: %s", name, reason)
        return None
    return internal_error(f'failed calling webhook "{name}": {reason}')


def _decode_patch_fields(answer: Any) -> Any:
    """Decode ``response.patch`` (base64) and check ``response.patchType``'s type, as decoding
    the AdmissionReview into its Go struct does."""
    response = answer.get("response") if isinstance(answer, dict) else None
    if not isinstance(response, dict):
        return answer
    value = response.get("patch")
    if value is None:
        patch = b""
    elif not isinstance(value, str):
        raise CallError(
            f"json: cannot unmarshal {go_json_kind(value)} into Go struct field AdmissionResponse.response.patch "
            "of type []uint8"
        )
    else:
        try:
            patch = gopatch.b64decode(value)
        except ValueError as exc:
            raise CallError(str(exc)) from exc
    patch_type = response.get("patchType")
    if patch_type is not None and not isinstance(patch_type, str):
        raise CallError(
            f"json: cannot unmarshal {go_json_kind(patch_type)} into Go struct field "
            "AdmissionResponse.response.patchType of type v1.PatchType"
        )
    return {**answer, "response": {**response, "patch": patch}}


def _decode_mutated(invocation: Invocation, patched: Any) -> tuple[dict[str, Any], Any]:
    """The patched object decoded into a new versioned object (Go's JSON serializer) and
    defaulted, in storage form; and the decoded object before defaulting, to tell whether the
    patch changed anything. A decoding error is a 500, as in kube-apiserver."""
    rt, version = invocation.rt, invocation.version
    text = json.dumps(patched, separators=(",", ":"), sort_keys=True)
    if not isinstance(patched, dict):
        if rt.builtin:
            raise internal_error(f"json: cannot unmarshal {go_json_kind(patched)} into Go value of type v1.{rt.kind}")
        raise internal_error(f"Object 'Kind' is missing in '{text}'")
    if not rt.builtin:
        if not patched.get("kind"):
            raise internal_error(f"Object 'Kind' is missing in '{text}'")
        if not patched.get("apiVersion"):
            raise internal_error(f"Object 'apiVersion' is missing in '{text}'")
    obj = copy.deepcopy(patched)
    try:
        if rt.builtin:
            rt.decode_mutated(obj, version)
            decoded = copy.deepcopy(obj)
        else:
            decoded = copy.deepcopy(obj)
            rt.decode_mutated(obj, version)
    except DecodeError as exc:
        raise internal_error(str(exc)) from exc
    if rt.to_storage is not None:
        obj = rt.to_storage(obj)
    elif not rt.builtin:
        obj["apiVersion"] = rt.api_version(rt.storage_version)
    return obj, decoded


def _verify(uid: str, version: str, answer: Any, mutating: bool) -> dict[str, Any]:
    """``VerifyAdmissionResponse``; the response, with ``patchType`` as kube-apiserver reads it
    (v1beta1: JSONPatch if there is a patch, whatever the webhook said)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("response"), dict):
        raise CallError("webhook response was absent")
    response: dict[str, Any] = answer["response"]
    if version != "v1":  # v1beta1: neither uid, kind nor patchType were checked
        return {**response, "patchType": "JSONPatch" if mutating and response["patch"] else None}
    if response.get("uid", "") != uid:
        raise CallError(f'expected response.uid="{uid}", got "{response.get("uid", "")}"')
    group, _, got_version = str(answer.get("apiVersion", "")).rpartition("/")
    kind = answer.get("kind", "")
    if (group, got_version, kind) != ("admission.k8s.io", "v1", "AdmissionReview"):
        raise CallError(
            f"expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, "
            f"got {group}/{got_version}, Kind={kind}"
        )
    patch_type = response.get("patchType")
    if mutating:
        if response["patch"] and patch_type is None:
            raise CallError("webhook returned response.patch but not response.patchType")
        if not response["patch"] and patch_type is not None:
            raise CallError("webhook returned response.patchType but not response.patch")
        if patch_type == "":
            raise CallError('webhook returned invalid response.patchType of ""')
        return response
    if response["patch"]:
        raise CallError("validating webhook may not return response.patch")
    if patch_type is not None:
        raise CallError("validating webhook may not return response.patchType")
    return response


def _denial(name: str, status: Any) -> ApiError:
    """``webhookerrors.ToStatusErr``: the webhook's Status, its message prefixed."""
    result: dict[str, Any] = status if isinstance(status, dict) else {}
    code = result.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) and code >= 400 else 400
    state = _text(result.get("status"))
    if state in ("", "Success"):
        state = "Failure"
    denied = f'admission webhook "{name}" denied the request'
    message = _text(result.get("message"))
    reason = _text(result.get("reason"))
    if message:
        message = f"{denied}: {message}"
    elif reason:
        message = f"{denied}: {reason}"
    else:
        message = f"{denied} without explanation"
    details = result.get("details")
    if isinstance(details, dict):
        details = {k: details[k] for k in _STATUS_DETAILS if k in details and details[k] not in (None, "", [], 0)}
        if isinstance(details.get("causes"), list):
            details["causes"] = [
                {k: c[k] for k in _CAUSE_FIELDS if c.get(k)} for c in details["causes"] if isinstance(c, dict)
            ]
    else:
        details = None
    return ApiError(code, reason, message, details or None, status_value=state)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _fingerprint(attrs: Attributes) -> str:
    """What a webhook's answer was about: the same fingerprint, the same answer."""
    return json.dumps(
        [
            attrs.operation,
            attrs.rt.storage_key,
            attrs.version,
            attrs.subresource,
            attrs.namespace,
            attrs.name,
            attrs.obj,
            attrs.old,
            attrs.delete_options,
        ],
        sort_keys=True,
        default=str,
    )


def _rule_matches(rule: dict[str, Any], attrs: Attributes, resource: tuple[str, str, str]) -> bool:
    """``rules.Matcher``: scope, operation, group, version, resource/subresource."""
    group, version, plural = resource
    scope = rule.get("scope") or "*"
    if scope == "Namespaced" and (resource == NAMESPACES or not attrs.namespace):
        return False
    if scope == "Cluster" and not (resource == NAMESPACES or not attrs.namespace):
        return False
    if scope not in ("*", "Namespaced", "Cluster"):
        return False
    operations = rule.get("operations") or []
    if "*" not in operations and attrs.operation not in operations:
        return False
    if not _exact_or_wildcard(rule.get("apiGroups") or [], group):
        return False
    if not _exact_or_wildcard(rule.get("apiVersions") or [], version):
        return False
    for entry in rule.get("resources") or []:
        res, _, sub = entry.partition("/")
        if (res == "*" or res == plural) and (sub == "*" or sub == attrs.subresource):
            return True
    return False


def _exact_or_wildcard(items: list[str], requested: str) -> bool:
    return "*" in items or requested in items


def _selector_empty(selector: dict[str, Any]) -> bool:
    return not selector.get("matchLabels") and not selector.get("matchExpressions")


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels, matchExpressions) against a set of labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key = requirement.get("key", "")
        operator = requirement.get("operator")
        values = requirement.get("values") or []
        if operator == "In" and not (key in labels and labels[key] in values):
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


# --------------------------------------------------------------------------- the HTTPS client


class CallError(Exception):
    """A webhook could not be called, or answered something that is not an answer; the text is
    what kube-apiserver's Go client reports."""


class WebhookClient:
    """POSTs AdmissionReviews to ``clientConfig.url`` over HTTPS, trusting ``caBundle``."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _context(self, ca_bundle: str) -> ssl.SSLContext:
        context = self._contexts.get(ca_bundle)
        if context is None:
            if ca_bundle:
                context = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode(errors="replace"))
            else:
                context = ssl.create_default_context()
            self._contexts[ca_bundle] = context
        return context

    async def post(self, hook: dict[str, Any], review: dict[str, Any]) -> Any:
        config = hook.get("clientConfig") or {}
        timeout = int(hook.get("timeoutSeconds") or 10)
        if "url" not in config:
            service = config.get("service") or {}
            url = (
                f"https://{service.get('name', '')}.{service.get('namespace', '')}.svc:{service.get('port', 443)}"
                f"{service.get('path') or ''}?timeout={timeout}s"
            )
            raise CallError(
                f'Post "{url}": the API emulator calls webhooks by clientConfig.url only, not by clientConfig.service'
            )
        url = f"{config['url']}?timeout={timeout}s"
        ca_bundle = config.get("caBundle") or ""
        try:
            context = self._context(ca_bundle)
        except (ssl.SSLError, ValueError, binascii.Error) as exc:
            raise CallError(f'Post "{url}": tls: failed to verify certificate: {exc}') from exc
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT, "Accept": "application/json, */*"}
            )
        try:
            async with asyncio.timeout(timeout):
                async with self._session.post(
                    url,
                    data=json.dumps(review, separators=(",", ":")).encode(),
                    headers={"Content-Type": "application/json"},
                    ssl=context,
                ) as response:
                    raw = await response.read()
                    status = response.status
        except TimeoutError as exc:
            raise CallError(f'Post "{url}": context deadline exceeded') from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            why = await _x509_error(exc, ca_bundle)
            raise CallError(f'Post "{url}": tls: failed to verify certificate: {why}') from exc
        except aiohttp.ClientConnectorError as exc:
            raise CallError(f'Post "{url}": {_dial_error(exc)}') from exc
        except aiohttp.ClientError as exc:
            raise CallError(f'Post "{url}": {exc}') from exc
        if not 200 <= status < 300:
            raise CallError(_status_error(status, raw))
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise CallError(f"couldn't get version/kind; json parse error: {exc}") from exc


def _dial_error(exc: aiohttp.ClientConnectorError) -> str:
    address = f"{exc.host}:{exc.port}"
    if isinstance(exc.os_error, ConnectionRefusedError):
        return f"dial tcp {address}: connect: connection refused"
    return f"dial tcp {address}: {exc.os_error.strerror or exc.os_error}"


async def _x509_error(exc: aiohttp.ClientConnectorCertificateError, ca_bundle: str) -> str:
    """What Go's verifier says about the webhook's certificate. It names a CA of ``caBundle``
    whose name matches the certificate's issuer but whose key did not sign it (the usual test
    mistake: a bundle from another run); the certificate is fetched again, unverified, to know."""
    error = exc.certificate_error
    verify = str(getattr(error, "verify_message", "") or error)
    peer = await _peer_certificate(exc.host, exc.port or 443)
    if "mismatch" in verify or "hostname" in verify:
        return _hostname_error(peer, exc.host)
    if "expired" in verify or "not yet valid" in verify:
        return f"x509: certificate has expired or is not yet valid: {verify}"
    text = "x509: certificate signed by unknown authority"
    candidate = _candidate_authority(ca_bundle, peer)
    if candidate is not None:
        name, why = candidate
        text += f' (possibly because of "{why}" while trying to verify candidate authority certificate "{name}")'
    return text


async def _peer_certificate(host: str, port: int) -> x509.Certificate | None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der) if der else None


def _hostname_error(peer: x509.Certificate | None, host: str) -> str:
    names: list[str] = []
    ips: list[str] = []
    if peer is not None:
        with contextlib.suppress(x509.ExtensionNotFound):
            sans = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
            ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"x509: certificate is valid for {', '.join(names)}, not {host}"
    if not ips:
        return f"x509: cannot validate certificate for {host} because it doesn't contain any IP SANs"
    return f"x509: certificate is valid for {', '.join(ips)}, not {host}"


def _candidate_authority(ca_bundle: str, peer: x509.Certificate | None) -> tuple[str, str] | None:
    if peer is None or not ca_bundle:
        return None
    try:
        certificates = x509.load_pem_x509_certificates(base64.b64decode(ca_bundle))
    except (ValueError, binascii.Error):
        return None
    for certificate in certificates:
        if certificate.subject != peer.issuer:
            continue
        key = certificate.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            why = "x509: ECDSA verification failure"
        elif isinstance(key, rsa.RSAPublicKey):
            why = "crypto/rsa: verification error"
        else:
            why = "x509: signature verification failure"
        common = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        organization = certificate.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
        if common and common[0].value:
            name = str(common[0].value)
        elif organization:
            name = str(organization[0].value)
        else:
            name = f"serial:{certificate.serial_number}"
        return name, why
    return None


_STATUS_MESSAGES: dict[int, str] = {
    400: "the server rejected our request for an unknown reason",
    401: "the server has asked for the client to provide credentials",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    409: "the server reported a conflict",
    422: "the server rejected our request due to an error in our request",
    429: "the server has received too many requests and has asked us to try again later",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted, but may still be processing the request",
}


def _status_error(code: int, raw: bytes) -> str:
    """What client-go makes of a non-2xx answer: its Status's message, or a generic text."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status" and body.get("status") == "Failure":
        return str(body.get("message", ""))
    text = raw.decode(errors="replace").strip()
    if code in (403, 415) or (code == 406 and text and text != "unknown"):
        return text
    if code in _STATUS_MESSAGES:
        return _STATUS_MESSAGES[code]
    if code >= 500:
        quoted = json.dumps(text, ensure_ascii=False)
        return f"an error on the server ({quoted}) has prevented the request from succeeding"
    return f"the server responded with the status code {code} but did not return more information"

