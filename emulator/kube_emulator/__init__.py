"""A Kubernetes API server emulator for tests (in-memory, aiohttp, no Docker).

It behaves like kube-apiserver v1.24 (the version the transcripts in
``tests/contract/transcripts/`` were recorded on) on what kopf, kubernetes_asyncio and
kubectl rely on, and the contract tests in ``tests/contract`` hold it to those transcripts.
Run it on its own with ``python -m kube_emulator``.

What it emulates
----------------
* ``/version``, discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/{group}``,
  ``/apis/{group}/{version}`` incl. ``<plural>/status`` entries), for: core v1
  ``namespaces``, ``events``, ``configmaps``, ``secrets``; ``coordination.k8s.io/v1``
  ``leases``; ``events.k8s.io/v1`` ``events`` (same storage as core v1 events, fields
  converted); ``apiextensions.k8s.io/v1`` ``customresourcedefinitions``; and every
  served version of every registered CRD.
* CRDs: creating one answers the un-established object, then (milliseconds later, on the
  emulator's "controller" task) sets ``NamesAccepted``/``Established`` and starts serving
  it. Updating a CRD swaps its schemas in place; deleting it deletes its objects
  (finalizers respected) and then the CRD.
* create (``generateName``, 409 ``AlreadyExists``), get, list (``limit``/``continue``,
  label and field selectors), PUT, merge-patch (RFC 7386), JSON patch (RFC 6902),
  delete (DeleteOptions preconditions, finalizers, ``deletionTimestamp``; the answer is
  the object while finalizers hold it, and for namespaces and CRDs, otherwise a
  ``Success`` Status, as each registry's ``ReturnDeletedObject`` says), deletecollection,
  ``dryRun=All``, ``fieldValidation=Strict|Warn`` (unknown fields: 400 / ``Warning``
  header; by default they are dropped silently). Request bodies may be JSON, YAML or, for
  the built-ins, Kubernetes protobuf (what ``kubectl create namespace`` sends); answers
  are always JSON. One global, increasing ``resourceVersion``; a write carrying a stale one
  is 409; a no-op write does not bump it. PUT without ``resourceVersion`` is 422 for custom
  resources, Leases and CRDs and unconditional for the rest (each built-in's
  ``AllowUnconditionalUpdate``); a PUT to a missing Lease or Event creates it.
* status subresource semantics and ``metadata.generation`` exactly as the custom resource
  strategy does it (non-metadata changes bump it; status too when there is no status
  subresource; setting ``deletionTimestamp`` bumps it).
* custom resource schemas: pruning, defaulting, nullable, openAPI v3 validation with
  kube-apiserver's error wording (422 ``Invalid`` with ``details.causes``), and CEL
  ``x-kubernetes-validations`` (incl. transition rules with ``oldSelf``) via cel-python.
  Field paths as v1.24 words them: a schema error inside an array item names the array,
  not the element (``status.conditions.status``), and an error repeated in several items
  is reported once; CEL and list-type errors index the element (``spec.members[1]``).
  A type error shows the JSON type found, and the enum is still checked; an integer's
  ``format`` (int32, int64) is not a range. ``x-kubernetes-list-type`` ``set``/``map``
  invariants (Duplicate at the first repetition, the key as value) are checked on create
  and on updates of the main resource unless the stored object already breaks them, and
  not on the status subresource, as v1.24 does.
* built-ins decoded like Go structs: unknown fields dropped, type errors are 400,
  ``MicroTime`` must have six fractional digits, ``Time`` is re-serialised to seconds;
  validations of Lease, Event (namespace of ``involvedObject``, events.k8s.io required
  fields), ConfigMap keys/immutability, object names, labels, annotations, finalizers.
* namespaces: ``default``, ``kube-system``, ``kube-public``, ``kube-node-lease`` exist; a
  write into a missing namespace is 404, into a terminating one 403. Deleting a
  namespace marks it ``Terminating``, deletes its objects (finalizers respected, so an
  object whose finalizer nobody removes keeps the namespace Terminating, as in a real
  cluster) and then removes it.
* watch (``watch=true|1``): from a ``resourceVersion`` (events in order, filtered with
  the cacher's ADDED/DELETED rewriting when an object enters/leaves a selector), without
  one (synthetic ADDED first, for the current state, in namespace/name order), 410
  ``Expired`` as an ``ERROR`` event inside a 200 when the version is older than the
  retained history (``watch_history`` events per resource, or :meth:`Emulator.compact`),
  ``timeoutSeconds``, ``allowWatchBookmarks`` (a BOOKMARK every ``bookmark_interval``
  seconds), chunked one-JSON-per-line streaming.
* a small garbage collector: when an owner is deleted, objects whose every
  ``ownerReference`` points at a deleted uid are deleted (background propagation).
* ``meta.k8s.io/v1`` Table output (``additionalPrinterColumns``) for ``kubectl get``.
* bearer-token auth (401 without it), optional TLS with a throw-away CA.
* test controls: latency, failing the next N requests with 500/429/409/503/504, dropping
  all watches, request counting by verb and resource, history compaction, bulk loading
  (many creates and status writes in one call, each stored exactly as its request would
  be); in-process (:class:`EmulatorControl`) and over HTTP under ``/_emulator/``.

What it does NOT emulate
------------------------
* authentication beyond one bearer token; RBAC/authorization; admission webhooks and
  admission plugins other than namespace lifecycle; API priority and fairness
  (throttling only when injected); audit.
* server-side apply (``application/apply-patch+yaml`` is answered 415) and
  ``managedFields`` (never returned); strategic merge patch is only approximated for the
  built-ins (a merge patch that merges ``finalizers``/``ownerReferences`` lists and
  honours ``$patch: delete`` / ``$deleteFromPrimitiveList``); custom resources answer 415
  to it, like kube-apiserver.
* CRD conversion webhooks (objects are stored once and served in any served version by
  rewriting ``apiVersion``, i.e. strategy ``None``), scale subresources,
  ``x-kubernetes-embedded-resource`` validation, defaulting on read after a schema
  change, ratcheting (other than of the list-type invariants), CEL cost limits and most of
  the Kubernetes CEL libraries, and the full set of CRD validations (names conflicts,
  structural-schema details).
* CEL rules over a value of the wrong type: v1.24 evaluates them anyway and reports
  cel-go's conversion errors (``invalid data, expected ...``); the emulator skips the
  rules when the schema found a type error. The order of errors across an object's
  properties (v1.24: Go map order; the emulator: sorted keys).
* the watch cache: v1.24 serves a watch without ``resourceVersion`` (like one from
  ``"0"``) from a cache that may not yet hold a write it has just answered, and sends the
  synthetic ADDED events in map order; the emulator starts from the latest state, sorted.
* pods, deployments and every other built-in not listed above; aggregated APIs;
  ``/openapi/v2`` (404). ``/openapi/v3`` is minimal: per group-version, the operations
  with the ``fieldValidation`` parameter (so kubectl uses server-side validation instead
  of downloading schemas) and the CRDs' schemas (enough for ``kubectl explain``);
  aggregated discovery (kubectl falls back to the legacy endpoints);
  ``sendInitialEvents`` / watch-list streaming; the legacy ``/api/v1/watch/...`` paths.
* snapshot-consistent pagination: a ``continue`` token resumes from the current state
  (its list ``resourceVersion`` is kept), and never expires with 410.
* ``propagationPolicy`` ``Foreground``/``Orphan`` (everything is background), graceful
  deletion periods, duplicate-field detection in ``fieldValidation``.
* persistence (all state is in memory) and multi-server consistency.
"""

from .control import EmulatorControl, HttpEmulatorControl
from .server import Emulator
from .thread import EmulatorThread

__all__ = ["Emulator", "EmulatorControl", "EmulatorThread", "HttpEmulatorControl"]
