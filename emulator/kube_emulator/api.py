"""The API semantics: registry strategies for create / update / patch / delete / list,
CRD registration, namespace and CRD termination, and a small garbage collector."""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import json
import random
import uuid
from collections.abc import Callable
from typing import Any

import jsonpatch

from . import gotime
from .admission import Admission, Attributes
from .errors import (
    ApiError,
    FieldError,
    GoLiteral,
    Names,
    already_exists,
    bad_request,
    conflict,
    delete_precondition_conflict,
    forbidden,
    go_json_kind,
    internal_error,
    invalid,
    method_not_allowed,
    namespace_not_found,
    not_found,
    path_not_found,
    unprocessable_patch,
    unsupported_media_type,
)
from .resources import (
    ResourceType,
    builtin_types,
    crd_resource_type,
    default_crd,
    validate_crd,
)
from .selectors import combine, parse_field_selector, parse_label_selector
from .store import Store, sort_key

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")
CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def deepcopy(obj: Any) -> Any:
    """Fast deep copy for JSON-shaped data."""
    if isinstance(obj, dict):
        return {k: deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [deepcopy(v) for v in obj]
    return obj


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return deepcopy(patch)
    result = deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, path: str = "") -> Any:
    """A merge patch that also merges the few list fields with a merge strategy that the
    supported built-ins have (``metadata.finalizers``, ``metadata.ownerReferences`` by uid,
    ``spec.finalizers``) and honours ``$patch: delete`` / ``$deleteFromPrimitiveList``."""
    if not isinstance(patch, dict):
        return deepcopy(patch)
    if patch.get("$patch") == "delete":
        return None
    result = deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in (value or [])]
            continue
        sub = f"{path}.{key}" if path else key
        if value is None:
            result.pop(key, None)
        elif sub in ("metadata.finalizers", "spec.finalizers") and isinstance(value, list):
            current = list(result.get(key) or [])
            result[key] = current + [v for v in value if v not in current]
        elif sub == "metadata.ownerReferences" and isinstance(value, list):
            by_uid: dict[Any, Any] = {ref.get("uid"): ref for ref in result.get(key) or []}
            for ref in value:
                if isinstance(ref, dict) and ref.get("$patch") == "delete":
                    by_uid.pop(ref.get("uid"), None)
                elif isinstance(ref, dict):
                    by_uid[ref.get("uid")] = merge_patch(by_uid.get(ref.get("uid")), ref)
            result[key] = list(by_uid.values())
        else:
            merged = strategic_merge_patch(result.get(key), value, sub)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _version_priority(version: str) -> tuple[int, int, int, str]:
    """kube-aware version ordering: GA > beta > alpha > others, then numbers descending."""
    import re

    match = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not match:
        return (3, 0, 0, version)
    major = int(match.group(1))
    stage = {"alpha": 2, "beta": 1, None: 0}[match.group(2)]
    minor = int(match.group(3) or 0)
    return (stage, -major, -minor, version)


class Api:
    def __init__(self, store: Store, clock: Callable[[], str] = gotime.now) -> None:
        self.store = store
        self.now = clock
        self.types: dict[tuple[str, str, str], ResourceType] = {}  # (group, version, plural)
        self.by_storage: dict[tuple[str, str], ResourceType] = {}
        self.crd_types: dict[str, ResourceType] = {}  # CRD name -> type
        self.builtin_groups: dict[str, list[str]] = {}
        self.pending_cleanup: set[tuple[str, str]] = set()  # ("ns", name) | ("crd", name)
        self.gc_queue: list[tuple[str, str]] = []  # (namespace, owner uid)
        self.owner_index: dict[str, set[tuple[tuple[str, str], str, str]]] = {}
        self.on_change: Callable[[], None] = lambda: None
        self.field_validation = ""  # per request: "", "Ignore", "Warn" or "Strict"
        self.warnings: list[str] = []  # per request: answered as Warning headers
        self.admission: Admission | None = None  # per request: admission webhooks (None: not called)
        for rt in builtin_types():
            self._register(rt)
            self.builtin_groups.setdefault(rt.group, [])
            for version in rt.versions:
                if version not in self.builtin_groups[rt.group]:
                    self.builtin_groups[rt.group].append(version)
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.types[("", "v1", "namespaces")], "v1", None, {"metadata": {"name": name}})

    # ------------------------------------------------------------------ registry

    def _register(self, rt: ResourceType) -> None:
        for version, info in rt.versions.items():
            if info.served:
                self.types[(rt.group, version, rt.plural)] = rt
        if rt.to_storage is None:
            self.by_storage[rt.storage_key] = rt
        self.store.bucket(rt.storage_key)

    def _unregister(self, rt: ResourceType) -> None:
        for key in [k for k, v in self.types.items() if v is rt]:
            del self.types[key]

    def resolve(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, version, plural))
        if rt is None:
            raise path_not_found()
        return rt

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first."""
        out: dict[str, list[str]] = {g: list(v) for g, v in self.builtin_groups.items()}
        for rt in self.crd_types.values():
            versions = out.setdefault(rt.group, [])
            for version, info in rt.versions.items():
                if info.served and version not in versions:
                    versions.append(version)
        for group, versions in out.items():
            if group not in self.builtin_groups:
                versions.sort(key=_version_priority)
        return out

    def resources_in(self, group: str, version: str) -> list[ResourceType]:
        seen: list[ResourceType] = []
        for (g, v, _), rt in self.types.items():
            if g == group and v == version and rt not in seen:
                seen.append(rt)
        return seen

    # ------------------------------------------------------------------ helpers

    def present(self, rt: ResourceType, version: str, obj: dict[str, Any]) -> dict[str, Any]:
        if rt.from_storage is not None:
            return rt.from_storage(obj)
        api_version = rt.api_version(version)
        if obj.get("apiVersion") != api_version:
            obj = dict(obj)
            obj["apiVersion"] = api_version
        return obj

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.store.bucket(rt.storage_key).get(namespace or "", name)
        if obj is None:
            raise not_found(rt.names, name)
        return obj

    def get(self, rt: ResourceType, version: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.present(rt, version, self._existing(rt, namespace, name))

    def _check_namespace(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        if not rt.namespaced or namespace is None:
            return
        ns = self.store.bucket(NS_KEY).get("", namespace)
        if ns is None:
            raise namespace_not_found(namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise forbidden(
                rt.names,
                name,
                f"unable to create new content in namespace {namespace} because it is being terminated",
                [
                    {
                        "reason": "NamespaceTerminating",
                        "message": f"namespace {namespace} is being terminated",
                        "field": "metadata.namespace",
                    }
                ],
            )

    def _check_type(self, rt: ResourceType, version: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(
                f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: json: cannot unmarshal '
                f"{go_json_kind(body)} into Go value of type struct"
            )
        api_version = rt.api_version(version)
        kind = body.get("kind")
        given_version = body.get("apiVersion")
        if not rt.builtin:
            if not kind:
                raise bad_request(f"Object 'Kind' is missing in '{json.dumps(body, separators=(',', ':'))}'")
            if not given_version:
                raise bad_request(f"Object 'apiVersion' is missing in '{json.dumps(body, separators=(',', ':'))}'")
        if given_version and given_version != api_version:
            raise bad_request(
                f"the API version in the data ({given_version}) does not match the expected API version ({api_version})"
            )
        if kind and kind != rt.kind:
            raise bad_request(
                f'{kind} in version "{version}" cannot be handled as a {rt.kind}: no kind "{kind}" is '
                f'registered for version "{api_version}" in scheme'
            )
        return body

    def _decode(self, rt: ResourceType, version: str, body: dict[str, Any]) -> dict[str, Any]:
        """Typed decoding / pruning+defaulting; returns the storage form."""
        obj = deepcopy(body)
        obj["apiVersion"] = rt.api_version(version)
        obj["kind"] = rt.kind
        removed = rt.decode(obj, version)
        if removed and self.field_validation in ("Strict", "Warn"):
            unknown = ", ".join(f'unknown field "{path}"' for path in removed)
            if self.field_validation == "Strict":
                prefix = f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}'
                raise bad_request(f"{prefix}: strict decoding error: {unknown}")
            self.warnings.extend(f'unknown field "{path}"' for path in removed)
        if rt.to_storage is not None:
            obj = rt.to_storage(obj)
        if rt.storage_key == ("", "secrets"):
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                data = obj.setdefault("data", {})
                for key, value in string_data.items():
                    data[key] = base64.b64encode(value.encode()).decode()
        if not rt.builtin:
            obj["apiVersion"] = rt.api_version(rt.storage_version)
        return obj

    def _storage_type(self, rt: ResourceType) -> ResourceType:
        return self.by_storage.get(rt.storage_key, rt)

    def _validate_or_raise(
        self,
        rt: ResourceType,
        version: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        subresource: str | None = None,
    ) -> None:
        request_version = rt.api_version(version) if rt.to_storage is not None else version
        errors = rt.validate(obj, old, request_version, status=subresource == "status")
        if errors:
            raise invalid(rt.group, rt.kind, obj["metadata"].get("name", ""), errors)

    def _index_owners(self, rt: ResourceType, obj: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        for source, add in ((old, False), (obj, True)):
            if source is None:
                continue
            meta = source["metadata"]
            entry = (rt.storage_key, meta.get("namespace", ""), meta["name"])
            for ref in meta.get("ownerReferences") or []:
                uid = ref.get("uid")
                if not uid:
                    continue
                if add:
                    self.owner_index.setdefault(uid, set()).add(entry)
                else:
                    owned = self.owner_index.get(uid)
                    if owned is not None:
                        owned.discard(entry)
                        if not owned:
                            del self.owner_index[uid]

    def _mutate(
        self,
        operation: str,
        rt: ResourceType,
        version: str,
        obj: dict[str, Any] | None,
        old: dict[str, Any] | None,
        namespace: str,
        name: str,
        subresource: str | None = None,
        delete_options: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any] | None, bool]:
        """Mutating admission, where kube-apiserver runs it: on the decoded object, before the
        registry fills it in (create) or applies its update rules (update), and on a delete
        just before the validating webhooks. Returns the object the mutating webhooks' patches
        leave, and whether any was applied; raises a webhook's denial or failure, or
        AdmissionRequired (see admission.py). ``namespace`` and ``name`` are the request's."""
        if self.admission is None:
            return obj, False
        if rt.storage_key == NS_KEY:
            namespace = name
        return self.admission.mutate(
            Attributes(operation, rt, version, subresource or "", namespace, name, obj, old, delete_options or {})
        )

    def _admit(
        self,
        operation: str,
        rt: ResourceType,
        version: str,
        obj: dict[str, Any] | None,
        old: dict[str, Any] | None,
        subresource: str | None = None,
        delete_options: dict[str, Any] | None = None,
        in_collection: bool = False,
    ) -> None:
        """Validating admission, where kube-apiserver runs it: after defaulting and validation,
        before storing. Raises a webhook's denial, or AdmissionRequired (see admission.py).
        The deletes of a deletecollection are admitted without a name, as v1.24 does."""
        if self.admission is None:
            return
        meta = (obj if obj is not None else old or {}).get("metadata") or {}
        name = "" if in_collection else meta.get("name", "")
        namespace = name if rt.storage_key == NS_KEY else meta.get("namespace", "")
        self.admission.check(
            Attributes(operation, rt, version, subresource or "", namespace, name, obj, old, delete_options or {})
        )

    # ------------------------------------------------------------------ create

    def create(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        body: Any,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        if rt.crd_name is not None and self._crd_terminating(rt.crd_name):
            raise ApiError(
                405,
                "MethodNotAllowed",
                "create not allowed while custom resource definition is terminating",
                {},
            )
        body = self._check_type(rt, version, body)
        obj = self._decode(rt, version, body)
        self._check_namespace(rt, namespace, obj["metadata"].get("name", ""))
        request_ns = (namespace or "") if rt.namespaced else ""
        decoded, mutated = self._mutate("CREATE", rt, version, obj, None, request_ns, obj["metadata"].get("name", ""))
        assert decoded is not None
        obj = decoded
        meta = obj["metadata"]
        name = meta.get("name", "")
        body_ns = meta.get("namespace")
        if rt.namespaced and namespace is not None and body_ns and body_ns != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if rt.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        meta.pop("selfLink", None)
        meta.pop("managedFields", None)
        if meta.get("resourceVersion"):
            raise internal_error("resourceVersion should not be set on objects to be created")
        meta.pop("resourceVersion", None)
        generated = False
        if not name and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
            generated = True
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.now()
        if self.admission is not None:
            self.admission.same_identity(meta, generated)
        self._prepare_for_create(rt, version, obj)
        self._validate_or_raise(rt, version, obj, None)
        if rt.storage_key == CRD_KEY:
            errors, _ = validate_crd(obj)
            if errors:
                raise invalid(rt.group, rt.kind, meta["name"], errors)
        self._admit("CREATE", rt, version, obj, None)
        if mutated:
            rt.prune(obj, version)
        bucket = self.store.bucket(rt.storage_key)
        key_ns = meta.get("namespace", "")
        while bucket.get(key_ns, meta["name"]) is not None:
            if not generated:
                raise already_exists(rt.names, meta["name"])
            meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
        meta["resourceVersion"] = ""
        obj = _order(obj, rt.builtin)
        if dry_run:
            obj["metadata"].pop("resourceVersion")
            return self.present(rt, version, obj)
        rv = self.store.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        self.store.put(rt.storage_key, obj, None, rv)
        self._index_owners(rt, obj, None)
        if rt.storage_key == CRD_KEY:
            self.pending_cleanup.add(("establish", obj["metadata"]["name"]))
            self.on_change()
        return self.present(rt, version, obj)

    def _prepare_for_create(self, rt: ResourceType, version: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if rt.has_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if not rt.builtin and rt.has_status(version):
            obj.pop("status", None)
        if rt.storage_key == NS_KEY:
            obj["status"] = {"phase": "Active"}
            finalizers = obj.setdefault("spec", {}).setdefault("finalizers", [])
            if "kubernetes" not in finalizers:
                finalizers.append("kubernetes")
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
        if rt.storage_key == CRD_KEY:
            obj["status"] = {}
            default_crd(obj)

    # ------------------------------------------------------------------ update

    def update(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        from_patch: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        body = self._check_type(rt, version, body)
        meta_in = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if meta_in.get("name", "") != name:
            raise bad_request(
                f"the name of the object ({meta_in.get('name', '')}) does not match the name on the URL ({name})"
            )
        if rt.namespaced and meta_in.get("namespace") and meta_in["namespace"] != namespace:
            raise bad_request(
                f"the namespace of the provided object ({meta_in['namespace']}) does not match the "
                f"namespace sent on the request ({namespace})"
            )
        bucket = self.store.bucket(rt.storage_key)
        existing = bucket.get(namespace or "", name)
        if existing is None:
            if rt.allow_create_on_update and subresource is None and not from_patch:
                created = self.create(rt, version, namespace, _without_rv(body), dry_run=dry_run)
                return 201, created
            raise not_found(rt.names, name)
        obj = self._decode(rt, version, body)
        uid = obj["metadata"].get("uid")
        if uid and uid != existing["metadata"]["uid"] and not from_patch:  # the update's precondition
            raise conflict(
                rt.names,
                name,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {existing['metadata']['uid']}",
            )
        decoded, mutated = self._mutate(
            "UPDATE", rt, version, obj, existing, existing["metadata"].get("namespace", ""), name, subresource
        )
        assert decoded is not None
        obj = decoded
        meta = obj["metadata"]
        new_rv = meta.get("resourceVersion", "")
        current_rv = existing["metadata"]["resourceVersion"]
        if not new_rv:
            if not rt.allow_unconditional_update and not from_patch:
                raise invalid(
                    rt.group,
                    rt.plural,
                    name,
                    [
                        FieldError(
                            "Invalid", "metadata.resourceVersion", GoLiteral("0x0"), "must be specified for an update"
                        )
                    ],
                )
            new_rv = current_rv
        if new_rv != current_rv:
            raise conflict(rt.names, name)
        if mutated:  # what a webhook's patch may have changed, as the update's checks find it
            moved = meta.get("namespace")
            if rt.namespaced and moved and moved != existing["metadata"].get("namespace"):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            if meta.get("name", "") != name:
                renamed = FieldError("Invalid", "metadata.name", meta.get("name", ""), "field is immutable")
                # found by the strategy's validation and again by the generic metadata checks
                raise invalid(rt.group, rt.kind, meta.get("name", ""), [renamed, renamed])
        uid = meta.get("uid")
        if uid and uid != existing["metadata"]["uid"]:
            raise invalid(rt.group, rt.kind, name, [FieldError("Invalid", "metadata.uid", uid, "field is immutable")])
        return self._write_update(rt, version, existing, obj, subresource, dry_run, mutated)

    def _write_update(
        self,
        rt: ResourceType,
        version: str,
        existing: dict[str, Any],
        obj: dict[str, Any],
        subresource: str | None,
        dry_run: bool,
        mutated: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        old_meta = existing["metadata"]
        status_enabled = rt.has_status(version) if not rt.builtin else "status" in rt.subresources
        if subresource == "status":
            new = deepcopy(existing)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            obj = new
        else:
            if status_enabled:
                if "status" in existing:
                    obj["status"] = deepcopy(existing["status"])
                else:
                    obj.pop("status", None)
        meta = obj["metadata"]
        # BeforeUpdate: system fields come from the stored object
        meta["uid"] = old_meta["uid"]
        meta["creationTimestamp"] = old_meta["creationTimestamp"]
        meta["resourceVersion"] = old_meta["resourceVersion"]
        meta.pop("selfLink", None)
        meta.pop("managedFields", None)
        if "namespace" in old_meta:
            meta["namespace"] = old_meta["namespace"]
        errors: list[FieldError] = []
        if old_meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = old_meta["deletionTimestamp"]
            if "deletionGracePeriodSeconds" in old_meta:
                meta["deletionGracePeriodSeconds"] = old_meta["deletionGracePeriodSeconds"]
            added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
            if added:
                errors.append(
                    FieldError(
                        "Forbidden",
                        "metadata.finalizers",
                        detail="no new finalizers can be added if the object is being deleted, found new "
                        "finalizers []string{" + ", ".join(json.dumps(f) for f in added) + "}",
                    )
                )
        elif meta.get("deletionTimestamp"):
            errors.append(
                FieldError("Invalid", "metadata.deletionTimestamp", meta["deletionTimestamp"], "field is immutable")
            )
            meta.pop("deletionTimestamp")
        if rt.has_generation:
            meta["generation"] = old_meta.get("generation", 1)
            if subresource is not None:
                changed = False  # status writes never bump generation
            elif rt.storage_key == CRD_KEY:
                changed = obj.get("spec") != existing.get("spec")
            else:
                changed = _non_metadata(obj) != _non_metadata(existing)
            if changed:
                meta["generation"] = old_meta.get("generation", 0) + 1
        else:
            meta.pop("generation", None)
        if rt.storage_key == CRD_KEY:
            default_crd(obj)
            crd_errors, _ = validate_crd(obj)
            errors.extend(crd_errors)
        if errors:
            raise invalid(rt.group, rt.kind, old_meta["name"], errors)
        self._validate_or_raise(rt, version, obj, existing, subresource)
        self._admit("UPDATE", rt, version, obj, existing, subresource)
        if mutated:
            rt.prune(obj, version)
        obj = _order(obj, rt.builtin)
        if obj == existing:  # a no-op write changes nothing, not even the resourceVersion
            return 200, self.present(rt, version, existing)
        if dry_run:
            return 200, self.present(rt, version, obj)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # the last finalizer is gone: the object is deleted (see the transcript)
            self._remove(rt, existing)
            return 200, self.present(rt, version, obj)
        rv = self.store.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        self.store.put(rt.storage_key, obj, existing, rv)
        self._index_owners(rt, obj, existing)
        if rt.storage_key == CRD_KEY:
            self._crd_changed(obj)
        return 200, self.present(rt, version, obj)

    # ------------------------------------------------------------------ patch

    def patch(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        content_type: str,
        raw: bytes,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        media = content_type.split(";")[0].strip().lower()
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
        if rt.builtin:
            accepted.append(STRATEGIC_PATCH)
        if media not in accepted or media == APPLY_PATCH:
            raise unsupported_media_type(media, accepted)
        existing = self.get(rt, version, namespace, name)
        current = deepcopy(existing)
        try:
            patch = json.loads(raw or b"null")
        except ValueError as exc:
            raise bad_request(f"error decoding patch: {exc}") from exc
        if media == JSON_PATCH:
            if not isinstance(patch, list):
                raise bad_request(f"json: cannot unmarshal {go_json_kind(patch)} into Go value of type jsonpatch.Patch")
            try:
                patched = jsonpatch.JsonPatch(patch).apply(current)
            except Exception as exc:  # JsonPatchException, JsonPointerException, KeyError, ...
                raise unprocessable_patch() from exc
        elif media == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise bad_request(
                    f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: json: cannot unmarshal '
                    f"{go_json_kind(patch)} into Go value of type map[string]interface {{}}"
                )
            patched = merge_patch(current, patch)
        else:
            if not isinstance(patch, dict):
                raise bad_request(
                    f"json: cannot unmarshal {go_json_kind(patch)} into Go value of type map[string]interface {{}}"
                )
            patched = strategic_merge_patch(current, patch)
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not a JSON object")
        patched_meta = patched.get("metadata")
        if not isinstance(patched_meta, dict):
            patched_meta = {}
            patched["metadata"] = patched_meta
        if patched_meta.get("name") != name:
            raise bad_request(
                f"the name of the object ({patched_meta.get('name', '')}) does not match the name on the URL ({name})"
            )
        if not patched_meta.get("resourceVersion"):
            patched_meta["resourceVersion"] = existing["metadata"]["resourceVersion"]
        _, obj = self.update(rt, version, namespace, name, patched, subresource, dry_run, from_patch=True)
        return obj

    # ------------------------------------------------------------------ delete

    def delete(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        options: dict[str, Any] | None = None,
        dry_run: bool = False,
        in_collection: bool = False,
    ) -> dict[str, Any]:
        options = options or {}
        existing = self._existing(rt, namespace, name)
        meta = existing["metadata"]
        preconditions = options.get("preconditions") or {}
        want_uid = preconditions.get("uid")
        if want_uid and want_uid != meta["uid"]:
            raise delete_precondition_conflict(
                rt.names,
                name,
                f"the UID in the precondition ({want_uid}) does not match the UID in record ({meta['uid']}). "
                "The object might have been modified",
            )
        want_rv = preconditions.get("resourceVersion")
        if want_rv and want_rv != meta["resourceVersion"]:
            raise delete_precondition_conflict(
                rt.names,
                name,
                f"the ResourceVersion in the precondition ({want_rv}) does not match the ResourceVersion in "
                f"record ({meta['resourceVersion']}). The object might have been modified",
            )
        if rt.storage_key == NS_KEY and name in ("default", "kube-system", "kube-public"):
            raise forbidden(rt.names, name, "this namespace may not be deleted")
        self._mutate(
            "DELETE",
            rt,
            version,
            None,
            existing,
            meta.get("namespace", ""),
            "" if in_collection else name,
            None,
            options,
        )
        self._admit("DELETE", rt, version, None, existing, None, options, in_collection)
        finalizers = list(meta.get("finalizers") or [])
        if rt.storage_key == NS_KEY:
            finalizers = finalizers or ["kubernetes"]
        if rt.storage_key == CRD_KEY and CRD_FINALIZER not in finalizers:
            finalizers.append(CRD_FINALIZER)
        if finalizers:
            if meta.get("deletionTimestamp"):
                return self.present(rt, version, existing)
            obj = deepcopy(existing)
            obj_meta = obj["metadata"]
            obj_meta["deletionTimestamp"] = self.now()
            obj_meta["deletionGracePeriodSeconds"] = 0
            if rt.storage_key == CRD_KEY:
                obj_meta["finalizers"] = finalizers
                _set_condition(
                    obj,
                    "Terminating",
                    "True",
                    "InstanceDeletionInProgress",
                    "CustomResource deletion is in progress",
                    self.now(),
                )
            if rt.storage_key == NS_KEY:
                obj.setdefault("status", {})["phase"] = "Terminating"
            if rt.has_generation and obj_meta.get("generation", 0) > 0:
                obj_meta["generation"] += 1
            obj = _order(obj, rt.builtin)
            if dry_run:
                return self.present(rt, version, obj)
            rv = self.store.next_rv()
            obj["metadata"]["resourceVersion"] = str(rv)  # _order made a new metadata dict
            self.store.put(rt.storage_key, obj, existing, rv)
            if rt.storage_key == NS_KEY:
                self.pending_cleanup.add(("ns", name))
                self.on_change()
            if rt.storage_key == CRD_KEY:
                self.pending_cleanup.add(("crd", name))
                self.on_change()
            return self.present(rt, version, obj)
        if dry_run:
            return self._delete_result(rt, version, existing)
        self._remove(rt, existing)
        return self._delete_result(rt, version, existing)

    def _delete_result(self, rt: ResourceType, version: str, existing: dict[str, Any]) -> dict[str, Any]:
        if rt.return_deleted_object:
            return self.present(rt, version, existing)
        details: dict[str, Any] = {"name": existing["metadata"]["name"]}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = existing["metadata"]["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _remove(self, rt: ResourceType, existing: dict[str, Any]) -> None:
        rv = self.store.next_rv()
        last = dict(existing)
        last["metadata"] = dict(existing["metadata"])
        last["metadata"]["resourceVersion"] = str(rv)
        self.store.remove(rt.storage_key, last, rv)
        self._index_owners(rt, None, existing)
        uid = existing["metadata"]["uid"]
        if uid in self.owner_index:
            self.gc_queue.append((existing["metadata"].get("namespace", ""), uid))
            self.on_change()
        if rt.storage_key == CRD_KEY:
            self._crd_removed(existing)
        if self.pending_cleanup:
            self.on_change()

    def delete_collection(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        params: dict[str, str],
        options: dict[str, Any] | None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        # Listed once, then deleted one at a time in list order up to the first error (kube-apiserver's
        # one worker); the answer is the listing. When a webhook must be called first, the request
        # is made again (admission.py): the listing and the deletes done are kept, not made twice.
        progress: dict[str, Any] = self.admission.collection if self.admission is not None else {}
        result: dict[str, Any] = progress.get("listing") or self.list(rt, version, namespace, params)
        progress["listing"] = result
        done: set[str] = progress.setdefault("done", set())
        for item in result["items"]:
            uid = item["metadata"]["uid"]
            if uid in done:
                continue
            name = item["metadata"]["name"]
            try:
                self.delete(rt, version, namespace, name, options, dry_run=dry_run, in_collection=True)
            except ApiError as exc:
                if exc.code != 404:
                    raise
            done.add(uid)
        return result

    # ------------------------------------------------------------------ list

    def selector(self, rt: ResourceType, params: dict[str, str]) -> Callable[[dict[str, Any]], bool] | None:
        return combine(
            parse_label_selector(params.get("labelSelector")),
            parse_field_selector(params.get("fieldSelector"), rt.storage_key),
        )

    def list(self, rt: ResourceType, version: str, namespace: str | None, params: dict[str, str]) -> dict[str, Any]:
        predicate = self.selector(rt, params)
        limit = int(params.get("limit") or 0)
        token = params.get("continue") or ""
        list_rv = self.store.rv
        start = ""
        if token:
            try:
                padded = token + "=" * (-len(token) % 4)
                decoded = json.loads(base64.urlsafe_b64decode(padded))
                start = decoded["start"]
                list_rv = int(decoded["rv"])
            except Exception as exc:
                raise bad_request(f"continue key is not valid: {exc}") from exc
        bucket = self.store.bucket(rt.storage_key)
        keys, objs = bucket.sorted_objects(
            namespace if rt.namespaced else None, lambda o: _list_key(o, namespace)
        )
        items: list[dict[str, Any]] = []
        remaining = 0
        next_start = ""
        for index in range(bisect.bisect_left(keys, start) if start else 0, len(keys)):
            obj = objs[index]
            if predicate is not None and not predicate(obj):
                continue
            if limit and len(items) >= limit:
                next_start = _list_key(items[-1], namespace) + "\x00"
                remaining = len(keys) - index  # only reported without a selector
                break
            items.append(obj)
        presented = []
        for obj in items:
            shown = self.present(rt, version, obj)
            if rt.builtin:
                shown = {k: v for k, v in shown.items() if k not in ("apiVersion", "kind")}
            presented.append(shown)
        metadata: dict[str, Any] = {}
        continue_token = ""
        if next_start:
            payload = json.dumps({"v": "meta.k8s.io/v1", "rv": list_rv, "start": next_start}, separators=(",", ":"))
            continue_token = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        if continue_token or not rt.builtin:
            metadata["continue"] = continue_token
        if continue_token and predicate is None:
            metadata["remainingItemCount"] = remaining
        metadata["resourceVersion"] = str(list_rv)
        if rt.builtin:
            return {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version(version),
                "metadata": metadata,
                "items": presented,
            }
        return {"apiVersion": rt.api_version(version), "items": presented, "kind": rt.list_kind, "metadata": metadata}

    # ------------------------------------------------------------------ CRDs

    def _crd_terminating(self, crd_name: str) -> bool:
        crd = self.store.bucket(CRD_KEY).get("", crd_name)
        return bool(crd and crd["metadata"].get("deletionTimestamp"))

    def establish(self, crd_name: str) -> None:
        bucket = self.store.bucket(CRD_KEY)
        crd = bucket.get("", crd_name)
        if crd is None:
            return
        self._crd_changed(crd)
        obj = deepcopy(crd)
        names = obj["spec"]["names"]
        accepted = {
            k: names[k] for k in ("plural", "singular", "shortNames", "kind", "listKind", "categories") if k in names
        }
        now = self.now()
        obj["status"]["acceptedNames"] = accepted
        _set_condition(obj, "NamesAccepted", "True", "NoConflicts", "no conflicts found", now)
        _set_condition(obj, "Established", "True", "InitialNamesAccepted", "the initial names have been accepted", now)
        if obj == crd:
            return
        rv = self.store.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        self.store.put(CRD_KEY, obj, crd, rv)

    def _crd_changed(self, crd: dict[str, Any]) -> None:
        if crd["metadata"].get("deletionTimestamp") and crd["metadata"]["name"] in self.crd_types:
            return
        _, schemas = validate_crd(crd)
        rt = crd_resource_type(crd, schemas)
        old = self.crd_types.get(crd["metadata"]["name"])
        if old is not None:
            self._unregister(old)
            if old.storage_key != rt.storage_key:
                self.store.drop_bucket(old.storage_key)
        self.crd_types[crd["metadata"]["name"]] = rt
        self._register(rt)

    def _crd_removed(self, crd: dict[str, Any]) -> None:
        rt = self.crd_types.pop(crd["metadata"]["name"], None)
        if rt is not None:
            self._unregister(rt)
            self.by_storage.pop(rt.storage_key, None)
            self.store.drop_bucket(rt.storage_key)

    # ------------------------------------------------------------------ controllers

    def run_controllers(self) -> bool:
        """One pass of the emulated controllers; returns True if work remains."""
        for kind, name in sorted(self.pending_cleanup):
            if kind == "establish":
                self.pending_cleanup.discard((kind, name))
                self.establish(name)
            elif kind == "ns":
                if self._cleanup_namespace(name):
                    self.pending_cleanup.discard((kind, name))
            elif kind == "crd" and self._cleanup_crd(name):
                self.pending_cleanup.discard((kind, name))
        while self.gc_queue:
            namespace, uid = self.gc_queue.pop()
            if self._uid_exists(uid):
                continue
            for storage_key, ns, name in list(self.owner_index.get(uid, ())):
                rt = self.by_storage.get(storage_key)
                obj = self.store.bucket(storage_key).get(ns, name)
                if rt is None or obj is None:
                    continue
                refs = obj["metadata"].get("ownerReferences") or []
                if all(not self._uid_exists(r.get("uid", "")) for r in refs):
                    with contextlib.suppress(ApiError):
                        self.delete(rt, rt.storage_version, ns or None, name)
            _ = namespace
        return bool(self.pending_cleanup)

    def _uid_exists(self, uid: str) -> bool:
        return uid in self.store.uids

    def _cleanup_namespace(self, name: str) -> bool:
        remaining = 0
        for key, bucket in list(self.store.buckets.items()):
            rt = self.by_storage.get(key)
            if rt is None or not rt.namespaced:
                continue
            for obj in list((bucket.objects.get(name) or {}).values()):
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    with contextlib.suppress(ApiError):
                        self.delete(rt, rt.storage_version, name, obj["metadata"]["name"])
        if any((b.objects.get(name) for k, b in self.store.buckets.items() if k != NS_KEY)):
            return False
        _ = remaining
        ns = self.store.bucket(NS_KEY).get("", name)
        if ns is not None:
            self._remove(self.by_storage[NS_KEY], ns)
        return True

    def _cleanup_crd(self, crd_name: str) -> bool:
        rt = self.crd_types.get(crd_name)
        if rt is not None:
            bucket = self.store.bucket(rt.storage_key)
            for obj in list(bucket.iter_objects(None)):
                if not obj["metadata"].get("deletionTimestamp"):
                    with contextlib.suppress(ApiError):
                        self.delete(
                            rt, rt.storage_version, obj["metadata"].get("namespace") or None, obj["metadata"]["name"]
                        )
            if bucket.count:
                return False
        crd = self.store.bucket(CRD_KEY).get("", crd_name)
        if crd is None:
            return True
        crd_rt = self.by_storage[CRD_KEY]
        obj = deepcopy(crd)
        obj["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or [] if f != CRD_FINALIZER]
        if obj["metadata"]["finalizers"]:
            rv = self.store.next_rv()
            obj["metadata"]["resourceVersion"] = str(rv)
            self.store.put(CRD_KEY, obj, crd, rv)
            if rt is not None:
                self._crd_removed(crd)
            return True
        self._remove(crd_rt, crd)
        return True


# ---------------------------------------------------------------------- helpers


def _without_rv(body: dict[str, Any]) -> dict[str, Any]:
    body = copy.copy(body)
    meta = dict(body.get("metadata") or {})
    meta.pop("resourceVersion", None)
    body["metadata"] = meta
    return body


def _non_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "metadata"}


def _list_key(obj: dict[str, Any], namespace: str | None) -> str:
    if namespace is not None:
        return obj["metadata"]["name"]
    return sort_key(obj)


def _set_condition(obj: dict[str, Any], kind: str, status: str, reason: str, message: str, now: str) -> None:
    conditions = obj.setdefault("status", {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == kind:
            if condition.get("status") != status:
                condition["lastTransitionTime"] = now
            condition.update(status=status, reason=reason, message=message)
            break
    else:
        conditions.append(
            {"type": kind, "status": status, "lastTransitionTime": now, "reason": reason, "message": message}
        )
    obj["status"]["conditions"] = conditions


_META_ORDER = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
]


def _order(obj: dict[str, Any], builtin: bool) -> dict[str, Any]:
    """Key order like the real server: Go struct order for built-ins, sorted for custom resources."""
    meta = obj.get("metadata", {})
    if builtin:
        ordered_meta = {k: meta[k] for k in _META_ORDER if k in meta}
        head = {"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion"), "metadata": ordered_meta}
        head.update({k: v for k, v in obj.items() if k not in head})
        return head
    out = {k: obj[k] for k in sorted(obj)}
    out["metadata"] = {k: meta[k] for k in sorted(meta)}
    return out


_ = (Names, method_not_allowed)
