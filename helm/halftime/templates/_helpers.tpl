{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "halftime.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object-name prefix: the release name, plus the chart name unless the
release name already contains it. */}}
{{- define "halftime.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "halftime.scheduler.fullname" -}}
{{ include "halftime.fullname" . }}-scheduler
{{- end }}

{{- define "halftime.worker.fullname" -}}
{{ include "halftime.fullname" . }}-worker
{{- end }}

{{- define "halftime.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "halftime.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: halftime
{{- end }}

{{/* Selector labels of a component: (dict "ctx" $ "component" "scheduler"). */}}
{{- define "halftime.selectorLabels" -}}
app.kubernetes.io/name: {{ include "halftime.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "halftime.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The Secret holding the workers' TLS files. */}}
{{- define "halftime.worker.tlsSecret" -}}
{{- default .Values.tls.existingSecret .Values.tls.workerExistingSecret }}
{{- end }}

{{/* Fails on contradictory values; included by every workload. */}}
{{- define "halftime.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt); the chart never creates secrets" }}
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.mutual (not .Values.tls.workerExistingSecret) }}
{{- fail "tls.mutual needs tls.workerExistingSecret (the workers' client certificate: tls.crt, tls.key, ca.crt)" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) }}
{{- fail "auth.enabled needs auth.existingSecret (keys auth.schedulerKey and auth.workerKey); the chart never creates secrets" }}
{{- end }}
{{- if le (int .Values.worker.terminationGracePeriodSeconds) (add (int .Values.worker.stopGraceSeconds) 29 | int) }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must exceed worker.stopGraceSeconds (%d) by at least 30 s, for the checkpoint upload" (int .Values.worker.terminationGracePeriodSeconds) (int .Values.worker.stopGraceSeconds)) }}
{{- end }}
{{- end }}
