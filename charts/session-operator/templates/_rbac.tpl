{{/*
The operator's permissions, in one place. Every request the operator makes:

  session-operator.io    sessions         get list watch patch delete   the index; retention
  session-operator.io    sessions/status  patch                         decisions
  coordination.k8s.io    leases           get list watch create         claims (one Lease per
                                          update delete                 busy target)
  ""                     events           create                        one per transition
  coordination.k8s.io    leases (leader)  get create update             leader election, in the
                                                                        release namespace

Nothing else: the operator lists no Namespaces and no CRDs. "watched" rules are
granted cluster-wide (ClusterRole) or in each watched namespace (Role); "leader"
rules in the release namespace, where the cluster-wide rules already cover them.
tests/chart/rbac.py reads the rendered objects back into (group, resource, verb,
scope) grants, to be compared with the requests a real API server records.
*/}}
{{- define "session-operator.rbac.watchedRules" -}}
- apiGroups: ["session-operator.io"]
  resources: ["sessions"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["session-operator.io"]
  resources: ["sessions/status"]
  verbs: ["patch"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{- define "session-operator.rbac.leaderRules" -}}
{{- /* create cannot be limited by name: the name is not known when a create is authorized. */ -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ .Values.operator.leaderElection.leaseName | quote }}]
  verbs: ["get", "update"]
{{- end -}}
