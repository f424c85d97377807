{{/* Names: the release's name, or <release>-controlplane, cut to 63 characters. */}}
{{- define "controlplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "controlplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "controlplane.redisName" -}}
{{- printf "%s-redis" (include "controlplane.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; controlplane.labels adds the server's selector labels. */}}
{{- define "controlplane.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: controlplane
{{- end }}

{{- define "controlplane.labels" -}}
{{ include "controlplane.commonLabels" . }}
{{ include "controlplane.selectorLabels" . }}
{{- end }}

{{- define "controlplane.redisLabels" -}}
{{ include "controlplane.commonLabels" . }}
{{ include "controlplane.redisSelectorLabels" . }}
{{- end }}

{{/* The control plane's pods; the in-chart Redis has component "redis". */}}
{{- define "controlplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "controlplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "controlplane.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "controlplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "controlplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "controlplane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the Redis URL: the user's, or the chart's from redis.external.url. */}}
{{- define "controlplane.redisURLSecret" -}}
{{- if .Values.redis.external.existingSecret }}
{{- .Values.redis.external.existingSecret }}
{{- else }}
{{- printf "%s-redis-url" (include "controlplane.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Checks the values once, from the Deployment: exactly one Redis, and no
config key that the chart sets from its own sections.
*/}}
{{- define "controlplane.validate" -}}
{{- $external := or .Values.redis.external.url .Values.redis.external.existingSecret }}
{{- if and $external .Values.redis.internal.enabled }}
{{- fail "redis: set redis.internal.enabled=false to use redis.external" }}
{{- end }}
{{- if not (or $external .Values.redis.internal.enabled) }}
{{- fail "redis: replicas share their state in Redis: set redis.external.url, redis.external.existingSecret or redis.internal.enabled=true" }}
{{- end }}
{{- if and .Values.redis.external.url .Values.redis.external.existingSecret }}
{{- fail "redis.external: set url or existingSecret, not both" }}
{{- end }}
{{- if and .Values.tls.clientCA.secretName (not .Values.tls.secretName) }}
{{- fail "tls.clientCA needs tls.secretName: mutual TLS is TLS" }}
{{- end }}
{{- range $flag, $owner := dict "grpc-addr" "ports.grpc" "http-addr" "ports.http" "redis-url" "redis" "tls-cert" "tls.secretName" "tls-key" "tls.secretName" "tls-client-ca" "tls.clientCA" }}
{{- if hasKey $.Values.config $flag }}
{{- fail (printf "config.%s: the chart sets --%s from %s" $flag $flag $owner) }}
{{- end }}
{{- end }}
{{- end }}
