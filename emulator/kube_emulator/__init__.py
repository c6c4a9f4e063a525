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
  converted); ``apiextensions.k8s.io/v1`` ``customresourcedefinitions``;
  ``admissionregistration.k8s.io/v1`` ``validatingwebhookconfigurations`` and
  ``mutatingwebhookconfigurations``; and every served version of every registered CRD.
* CRDs: creating one answers the un-established object, then (milliseconds later, on the
  emulator's "controller" task) sets ``NamesAccepted``/``Established`` and starts serving
  it. Updating a CRD swaps its schemas in place; deleting it deletes its objects
  (finalizers respected) and then the CRD.
* create (``generateName``, 409 ``AlreadyExists``), get, list (``limit``/``continue``,
  label and field selectors), PUT, merge-patch (RFC 7386), JSON patch (RFC 6902),
  delete (DeleteOptions preconditions, finalizers, ``deletionTimestamp``; the answer is
  the object while finalizers hold it, and for namespaces and CRDs, otherwise a
  ``Success`` Status, as each registry's ``ReturnDeletedObject`` says), deletecollection
  (one delete after the other up to the first error; the answer is the listing),
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
* validating admission webhooks (``admission.py``): a ValidatingWebhookConfiguration is
  defaulted (``failurePolicy`` Fail, ``matchPolicy`` Equivalent, selectors, ``timeoutSeconds``
  10, ``rules[].scope``) and validated as v1.24 does. Its webhooks are called on CREATE,
  UPDATE (PUT, patches, the status subresource) and DELETE (deletecollection too: each
  delete in turn, without a name, stopping at the first error) of what their ``rules`` match
  (groups, versions, resources and subresources, operations, scope; ``matchPolicy``
  Equivalent also matches the other served versions of a CRD and core v1 / events.k8s.io/v1
  events), when ``namespaceSelector`` and ``objectSelector`` (matchLabels, matchExpressions)
  match, after defaulting and validation and before storing; never for webhook
  configurations of either kind. Each gets an ``admission.k8s.io/v1`` (or v1beta1) AdmissionReview POSTed
  to ``clientConfig.url?timeout=<timeoutSeconds>s`` over HTTPS verified with ``caBundle``:
  uid, kind/resource/subResource (of the matched version), requestKind/requestResource,
  name, namespace, operation, userInfo, object and oldObject in that version, dryRun, and
  Create/Update/DeleteOptions from the request. A denial is answered with the webhook's
  code (400 if below 400), reason and details, its message prefixed ``admission webhook
  "<name>" denied the request: `` (or ``... without explanation``); a webhook that cannot be
  reached, times out, answers a non-2xx or an invalid review fails the request with a 500
  ``InternalError`` worded as v1.24's Go client words it (connection refused, context
  deadline exceeded, x509, wrong uid, ...) unless ``failurePolicy`` is Ignore; on dry-run
  requests a webhook whose ``sideEffects`` is not None/NoneOnDryRun fails it with 400. The
  webhooks' ``warnings`` (also beside a denial) and the ``fieldValidation=Warn`` warnings
  are ``Warning: 299 - "<text>"`` headers as v1.24's recorder writes them (``"`` and
  backslashes escaped, repeats and texts with control characters dropped, each cut to 256
  characters past 4096 in all). While a webhook is called, other requests are served; if
  the object changes meanwhile, the write is made again and the webhooks are called again,
  as kube-apiserver's retries do.
* mutating admission webhooks (``admission.py``, ``gopatch.py``): a
  MutatingWebhookConfiguration is defaulted and validated as the validating kind is, and
  ``reinvocationPolicy`` defaults to Never (IfNeeded and Never allowed). Its webhooks match
  as the validating ones do and are called before them, one after the other in configuration
  order (configurations by name, then webhook order), each matched (selectors included) and
  called on the object as the previous ones left it: on a create, the decoded object before
  the registry fills it in (no uid, ``creationTimestamp: null``, no namespace unless sent,
  no name yet for ``generateName``, status as sent); on an update, the body of a PUT as sent
  or the result of a patch, before the ``resourceVersion`` checks (so a stale PUT calls
  them, then is 409); on a delete, just before the validating webhooks (deletecollection:
  each delete). The answer's ``patchType: JSONPatch`` ``patch`` (base64) is applied to the
  object in the version the webhook was sent, as v1.24's evanphx/json-patch v4 applies it
  (its quirks too: ``replace`` of a missing key adds it) and with its error texts; the
  result is decoded (built-ins: into the Go struct, unknown fields dropped) and defaulted,
  then the request goes on: the registry's rules (status kept or dropped as the status
  subresource says, a change of namespace is 400, of name on an update 422), schema and CEL
  validation (422), the validating webhooks (which see fields the schema does not know), and
  pruning when stored. A patch without ``patchType`` or the reverse, an empty ``patchType``,
  a ``patchType`` other than JSONPatch and a patch that is not base64 fail the request with
  a 500 as unreachable webhooks do, unless ``failurePolicy`` is Ignore; a patch that is not
  a JSON list of operations, does not apply or does not decode, and any non-empty patch on a
  DELETE, are a 500 whatever the failurePolicy (v1.24). An ``admission.k8s.io/v1beta1``
  answer's patch is applied as a JSON patch whatever its ``patchType``. Denials, failures,
  dry run and ``sideEffects``, ``timeoutSeconds`` and warnings as for validating webhooks (a
  mutating webhook's warnings come first). ``reinvocationPolicy: IfNeeded``: a webhook
  called before a later one changed the object is called once more, in a second round, as
  v1.24 does.
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
* authentication beyond one bearer token (a webhook sees it as user ``admin``, groups
  ``system:masters``, ``system:authenticated``); RBAC/authorization; admission plugins
  other than namespace lifecycle and admission webhooks; API priority and fairness
  (throttling only when injected); audit (and the webhooks' audit annotations).
* admission of CONNECT; webhooks' ``matchConditions`` (not in v1.24: dropped as unknown
  fields); mutation by in-tree admission plugins (none mutates, so none is reinvoked); the
  mutating webhooks' audit annotations
  (``mutation.webhook.admission.k8s.io/round_<r>_index_<i>``,
  ``patch.webhook.admission.k8s.io/...``). What v1.36 does differently: it sends a mutating
  webhook a create's object with its namespace set and without ``creationTimestamp: null``,
  and lets ``failurePolicy`` decide about a patch that is not a JSON list of operations
  (v1.24: always a 500); JSON syntax errors in a patch are worded as the Go (1.27) that
  built the recorded server words them. Webhooks with ``clientConfig.service`` are stored
  but never reached (there are no Services): calling one fails as an unreachable webhook
  does, by ``failurePolicy``, with a message that says so. A configuration is in force as
  soon as it is written (a real server takes a moment to pick it up: tests should wait until
  a webhook is called). Validating webhooks are called concurrently, but their warnings are
  answered in configuration order, and of several failures the first in that order wins
  (v1.24: the first to arrive). A create whose webhooks are called replays the mutating
  webhooks' recorded answers on each attempt: if a configuration or a namespace's labels
  change meanwhile, the chain is matched again (kube-apiserver calls them once). The writes
  of the emulated controllers (namespace and CRD cleanup, garbage collection) and
  :meth:`Emulator.bulk_load` call no webhooks; a real cluster's controllers would.
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
