{{/* The chart name, or nameOverride. */}}
{{- define "litemaas-cache-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix: fullnameOverride, or the release name (plus the chart name unless it contains it). */}}
{{- define "litemaas-cache-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "litemaas-cache-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object (without the Helm-only ones for plain manifests). */}}
{{- define "litemaas-cache-operator.labels" -}}
{{- if not .Values.plainManifests -}}
helm.sh/chart: {{ include "litemaas-cache-operator.chart" . }}
{{ end -}}
app.kubernetes.io/name: {{ include "litemaas-cache-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- if not .Values.plainManifests }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
app.kubernetes.io/part-of: litemaas
{{- end }}

{{/* Selector labels of one component (operator or api): pass (dict "ctx" $ "component" "operator"). */}}
{{- define "litemaas-cache-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "litemaas-cache-operator.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Name of the bundled Redis's StatefulSet, Service and (generated) Secret. */}}
{{- define "litemaas-cache-operator.redisName" -}}
{{- printf "%s-redis" (include "litemaas-cache-operator.fullname" .) }}
{{- end }}

{{/* The Secret holding the bundled Redis's password: redis.auth.existingSecret, else the generated one. */}}
{{- define "litemaas-cache-operator.redisSecretName" -}}
{{- default (include "litemaas-cache-operator.redisName" .) .Values.redis.auth.existingSecret }}
{{- end }}

{{- define "litemaas-cache-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "litemaas-cache-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "litemaas-cache-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Environment shared by the operator and the API: connection strings by reference to existingSecret (never values),
then the plain config. Integers go through `int` so that large ones are not rendered in float notation.
*/}}
{{- define "litemaas-cache-operator.env" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: DATABASE_URL
- name: LITELLM_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: LITELLM_DATABASE_URL
      optional: true
{{- if .Values.redis.enabled }}
# The bundled Redis (templates/redis.yaml); existingSecret's REDIS_URL would override it, so it is not read.
- name: REDIS_HOST
  value: {{ include "litemaas-cache-operator.redisName" . | quote }}
- name: REDIS_PORT
  value: "6379"
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "litemaas-cache-operator.redisSecretName" . }}
      key: {{ .Values.redis.auth.existingSecretKey }}
{{- else }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: REDIS_URL
      optional: true
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.existingSecret }}
      key: REDIS_PASSWORD
      optional: true
{{- with .Values.config.redisHost }}
- name: REDIS_HOST
  value: {{ . | quote }}
{{- end }}
- name: REDIS_PORT
  value: {{ int .Values.config.redisPort | quote }}
{{- end }}
- name: REDIS_ENABLED
  value: {{ .Values.config.redisEnabled | quote }}
- name: REDIS_CLUSTER
  value: {{ .Values.config.redisCluster | quote }}
- name: REDIS_DB
  value: {{ int .Values.config.redisDb | quote }}
- name: REDIS_KEY_PREFIX
  value: {{ .Values.config.redisKeyPrefix | quote }}
- name: CACHE_TTL_HISTORICAL_DAY
  value: {{ int .Values.config.cacheTtlHistoricalDay | quote }}
- name: CACHE_TTL_CURRENT_DAY
  value: {{ int .Values.config.cacheTtlCurrentDay | quote }}
- name: CACHE_TTL_ANALYTICS
  value: {{ int .Values.config.cacheTtlAnalytics | quote }}
- name: CACHE_TTL_BREAKDOWN
  value: {{ int .Values.config.cacheTtlBreakdown | quote }}
- name: ANALYTICS_MAX_RANGE_DAYS
  value: {{ int .Values.config.analyticsMaxRangeDays | quote }}
- name: LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
{{- range .Values.extraEnv }}
- name: {{ .name }}
  value: {{ .value | quote }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by both Deployments. */}}
{{- define "litemaas-cache-operator.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Checks of value combinations the schema cannot express. */}}
{{- define "litemaas-cache-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) }}
{{- fail "replicaCount > 1 needs peering.enabled: without kopf peering every replica would warm and invalidate" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.config.redisCluster }}
{{- fail "config.redisCluster needs an external Redis Cluster: the bundled Redis (redis.enabled) is a single server" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.plainManifests (not .Values.redis.auth.existingSecret) }}
{{- fail "redis.auth.existingSecret is required with plainManifests: a generated Redis password would be written into the manifests" }}
{{- end }}
{{- end }}
