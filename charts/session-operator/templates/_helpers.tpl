{{/* Chart name, possibly overridden. */}}
{{- define "session-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, with the chart name unless it already contains it. */}}
{{- define "session-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select this release's pods (never change them: Deployment selectors are immutable). */}}
{{- define "session-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "session-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "session-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "session-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: session-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "session-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "session-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "session-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "session-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "session-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "session-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "session-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret the pods mount for the webhook's certificate: made by the chart, or by cert-manager. */}}
{{- define "session-operator.webhookSecretName" -}}
{{- $suffix := ternary "webhook-cert" "webhook-tls" .Values.webhook.certManager.enabled -}}
{{- printf "%s-%s" (include "session-operator.fullname" .) $suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the pods mount it; --webhook-cert-file and --webhook-key-file point into it. */}}
{{- define "session-operator.webhookCertDir" -}}
/etc/session-operator/webhook
{{- end -}}

{{/* PromQL label matchers that select this release's series, as the ServiceMonitor scrapes them. */}}
{{- define "session-operator.promSelector" -}}
{{- if .Values.monitoring.prometheusRule.selector -}}
{{- .Values.monitoring.prometheusRule.selector -}}
{{- else -}}
{{- printf "job=%q, namespace=%q" (include "session-operator.metricsServiceName" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Settings that cannot work together fail the render with a message that says why. */}}
{{- define "session-operator.validate" -}}
{{- $le := .Values.operator.leaderElection -}}
{{- if and (not $le.enabled) (gt (int .Values.replicaCount) 1) -}}
{{- fail "operator.leaderElection.enabled=false needs replicaCount: 1 (without leader election every replica would reconcile)" -}}
{{- end -}}
{{- if and $le.enabled (ge (float64 $le.renewDeadline) (float64 $le.leaseDuration)) -}}
{{- fail "operator.leaderElection.renewDeadline must be shorter than leaseDuration" -}}
{{- end -}}
{{- if eq (int .Values.operator.metricsPort) (int .Values.operator.healthPort) -}}
{{- fail "operator.metricsPort and operator.healthPort must differ" -}}
{{- end -}}
{{- if and .Values.webhook.enabled (has (int .Values.webhook.port) (list (int .Values.operator.metricsPort) (int .Values.operator.healthPort))) -}}
{{- fail "webhook.port must differ from operator.metricsPort and operator.healthPort" -}}
{{- end -}}
{{- end -}}
