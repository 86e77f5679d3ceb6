{{/* Names. */}}
{{- define "styleprobe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "styleprobe.fullname" -}}
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

{{/* The name of one component's objects: <fullname>-<component>. */}}
{{- define "styleprobe.component" -}}
{{- printf "%s-%s" (include "styleprobe.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "styleprobe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "styleprobe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "styleprobe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "styleprobe.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: styleprobe
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "styleprobe.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "styleprobe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "styleprobe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "styleprobe.secretName" -}}
{{- default (include "styleprobe.component" (dict "root" . "component" "secrets")) .Values.secrets.existingSecret }}
{{- end }}

{{/* Where the services are. */}}
{{- define "styleprobe.tritonGrpcUrl" -}}
{{- printf "%s:8001" (include "styleprobe.component" (dict "root" . "component" "triton")) }}
{{- end }}

{{- define "styleprobe.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:6379/0" (include "styleprobe.component" (dict "root" . "component" "redis")) }}
{{- else }}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url }}
{{- end }}
{{- end }}

{{/* Whether the services read Redis's URL from the Secret's redis-url: the in-cluster
Redis's (it holds the password) or redis.urlFromSecret. */}}
{{- define "styleprobe.redisUrlInSecret" -}}
{{- if or .Values.redis.enabled .Values.redis.urlFromSecret }}true{{ end }}
{{- end }}

{{/* The orchestrator's TLS Secret: orchestrator.tls.existingSecret or the chart's. */}}
{{- define "styleprobe.tlsSecretName" -}}
{{- default (include "styleprobe.component" (dict "root" . "component" "tls")) .Values.orchestrator.tls.existingSecret }}
{{- end }}

{{- define "styleprobe.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "%s:9000" (include "styleprobe.component" (dict "root" . "component" "minio")) }}
{{- else }}
{{- required "minio.endpoint is required when minio.enabled is false" .Values.minio.endpoint }}
{{- end }}
{{- end }}

{{/* Pod-level settings every StyleProbe pod shares. */}}
{{- define "styleprobe.podCommon" -}}
serviceAccountName: {{ include "styleprobe.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The environment of the orchestrator (.tokens true) and the workers: the ConfigMap, the
metrics port, and the secrets as files (STYLEPROBE_<NAME>_FILE; the API tokens only for
the orchestrator).
*/}}
{{- define "styleprobe.appEnv" -}}
envFrom:
  - configMapRef:
      name: {{ include "styleprobe.fullname" .root }}
env:
  {{- if .tokens }}
  - name: STYLEPROBE_METRICS_PORT
    value: {{ .root.Values.metrics.orchestratorPort | quote }}
  - name: STYLEPROBE_API_TOKENS_FILE
    value: /run/secrets/styleprobe/api-tokens
  {{- else }}
  - name: STYLEPROBE_WORKER_METRICS_PORT
    value: {{ .root.Values.metrics.workerPort | quote }}
  {{- end }}
  {{- if .root.Values.modelRepository.existingClaim }}
  - name: STYLEPROBE_MODEL_REPOSITORY
    value: /models
  {{- end }}
  - name: STYLEPROBE_S3_ACCESS_KEY_FILE
    value: /run/secrets/styleprobe/s3-access-key
  - name: STYLEPROBE_S3_SECRET_KEY_FILE
    value: /run/secrets/styleprobe/s3-secret-key
  {{- if include "styleprobe.redisUrlInSecret" .root }}
  - name: STYLEPROBE_REDIS_URL_FILE
    value: /run/secrets/styleprobe/redis-url
  {{- end }}
{{- end }}

{{/* The secret files one process gets. */}}
{{- define "styleprobe.secretVolume" -}}
- name: secrets
  secret:
    secretName: {{ include "styleprobe.secretName" .root }}
    defaultMode: 0440
    items:
      {{- if .tokens }}
      - {key: api-tokens, path: api-tokens}
      {{- end }}
      - {key: s3-access-key, path: s3-access-key}
      - {key: s3-secret-key, path: s3-secret-key}
      {{- if include "styleprobe.redisUrlInSecret" .root }}
      - {key: redis-url, path: redis-url}
      {{- end }}
{{- end }}

{{/* An autoscaling/v2 CPU utilization target plus extra metric specs. */}}
{{- define "styleprobe.hpaMetrics" -}}
metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: {{ .targetCPUUtilizationPercentage }}
  {{- with .metrics }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* A headless Service for the metrics port (.port) of one component's pods (ServiceMonitor). */}}
{{- define "styleprobe.metricsService" -}}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "styleprobe.component" . }}-metrics
  labels:
    {{- include "styleprobe.labels" . | nindent 4 }}
    styleprobe.io/metrics: "true"
spec:
  clusterIP: None
  selector:
    {{- include "styleprobe.selectorLabels" . | nindent 4 }}
  ports:
    - {name: metrics, port: {{ .port }}, targetPort: metrics, protocol: TCP}
{{- end }}

{{/* The shared model repository (modelRepository.existingClaim), read-only at /models. */}}
{{- define "styleprobe.modelRepositoryMount" -}}
{{- if .Values.modelRepository.existingClaim }}
- {name: model-repository, mountPath: /models, readOnly: true}
{{- end }}
{{- end }}

{{- define "styleprobe.modelRepositoryVolume" -}}
{{- with .Values.modelRepository.existingClaim }}
- name: model-repository
  persistentVolumeClaim: {claimName: {{ . }}}
{{- end }}
{{- end }}

{{/* A workload's runtime and priority classes (extension points; . is its values). */}}
{{- define "styleprobe.podClasses" -}}
{{- with .runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}
