{{/* Names, labels and the shared pieces of the pod specs. */}}

{{- define "codex-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or just the release name when it already contains the chart name.
Truncated so that "-control-plane" (14 chars) still fits a 63-char DNS label. */}}
{{- define "codex-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 49 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 49 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 49 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "codex-gateway.controlPlane.fullname" -}}
{{- printf "%s-control-plane" (include "codex-gateway.fullname" .) }}
{{- end }}

{{- define "codex-gateway.dataPlane.fullname" -}}
{{- printf "%s-data-plane" (include "codex-gateway.fullname" .) }}
{{- end }}

{{- define "codex-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "codex-gateway.labels" -}}
helm.sh/chart: {{ include "codex-gateway.chart" . }}
app.kubernetes.io/name: {{ include "codex-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: codex-gateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "data-plane"). */}}
{{- define "codex-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codex-gateway.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's resources. */}}
{{- define "codex-gateway.componentLabels" -}}
{{ include "codex-gateway.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* image: call with the plane's image values and the root context. */}}
{{- define "codex-gateway.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (.image.tag | default .ctx.Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{- define "codex-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "codex-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The migration Job runs as a pre-install hook, before the chart's (non-hook)
ServiceAccount exists, so it may only use an account that already exists. */}}
{{- define "codex-gateway.migration.serviceAccountName" -}}
{{- if .Values.migration.serviceAccountName }}
{{- .Values.migration.serviceAccountName }}
{{- else if not .Values.serviceAccount.create }}
{{- include "codex-gateway.serviceAccountName" . }}
{{- else }}
{{- print "default" }}
{{- end }}
{{- end }}

{{- define "codex-gateway.controlPlaneUrl" -}}
{{- if .Values.dataPlane.controlPlaneUrl }}
{{- .Values.dataPlane.controlPlaneUrl }}
{{- else }}
{{- printf "http://%s.%s.svc:%v" (include "codex-gateway.controlPlane.fullname" .) .Release.Namespace .Values.controlPlane.grpcPort }}
{{- end }}
{{- end }}

{{/* ---- Secrets ---------------------------------------------------------------------- */}}

{{- define "codex-gateway.secretName" -}}
{{- default (include "codex-gateway.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Key of one credential inside the Secret; call with (dict "ctx" $ "item" "adminToken"). */}}
{{- define "codex-gateway.secretKey" -}}
{{- $fixed := dict "adminToken" "ADMIN_TOKEN" "dataPlaneToken" "DATA_PLANE_TOKEN" "encryptionKey" "ENCRYPTION_KEY" "databaseUrl" "DATABASE_URL" "redisUrl" "REDIS_URL" }}
{{- if .ctx.Values.secrets.existingSecret }}
{{- index .ctx.Values.secrets.existingSecretKeys .item | default "" }}
{{- else }}
{{- index $fixed .item }}
{{- end }}
{{- end }}

{{/* "true" when REDIS_URL is configured, else "". */}}
{{- define "codex-gateway.redisEnabled" -}}
{{- if .Values.secrets.existingSecret }}
{{- if .Values.secrets.existingSecretKeys.redisUrl }}true{{ end }}
{{- else if .Values.secrets.redisUrl }}true{{ end }}
{{- end }}

{{/* The data of the chart-generated Secret (base64 values), as YAML.
Explicit values win; otherwise values already stored in the cluster are reused (lookup), so
upgrades keep the generated tokens and, above all, the encryption key; otherwise new random
values are generated. The result is memoised in .Values (shared by all templates of one
render), so the Secret and the checksum annotations of the pods agree even when random
values are generated. */}}
{{- define "codex-gateway.secretData" -}}
{{- if not (hasKey .Values "__codexGatewaySecretData") }}
{{- $s := .Values.secrets }}
{{- $existing := dict }}
{{- $found := lookup "v1" "Secret" .Release.Namespace (include "codex-gateway.secretName" .) }}
{{- if $found }}{{ $existing = $found.data | default dict }}{{ end }}
{{- if not $s.databaseUrl }}
{{- fail "codex-gateway: no database configured: set secrets.databaseUrl (postgres://user:password@host:5432/db) or secrets.existingSecret (a Secret you manage with keys named in secrets.existingSecretKeys)" }}
{{- end }}
{{- if and $s.adminToken (lt (len $s.adminToken) 16) }}
{{- fail "codex-gateway: secrets.adminToken must be at least 16 characters (or empty to generate one)" }}
{{- end }}
{{- if and $s.dataPlaneToken (lt (len $s.dataPlaneToken) 16) }}
{{- fail "codex-gateway: secrets.dataPlaneToken must be at least 16 characters (or empty to generate one)" }}
{{- end }}
{{- if and $s.encryptionKey (not (regexMatch "^[0-9a-fA-F]{64}$" $s.encryptionKey)) }}
{{- fail "codex-gateway: secrets.encryptionKey must be exactly 64 hex characters (`openssl rand -hex 32`), or empty to generate one" }}
{{- end }}
{{- $data := dict }}
{{- $_ := set $data "ADMIN_TOKEN" (ternary (b64enc ($s.adminToken | toString)) (get $existing "ADMIN_TOKEN" | default (randAlphaNum 32 | b64enc)) (not (empty $s.adminToken))) }}
{{- $_ := set $data "DATA_PLANE_TOKEN" (ternary (b64enc ($s.dataPlaneToken | toString)) (get $existing "DATA_PLANE_TOKEN" | default (randAlphaNum 32 | b64enc)) (not (empty $s.dataPlaneToken))) }}
{{- /* 64 hex chars: SHA-256 of 64 crypto-random alphanumerics (~380 bits of entropy). */}}
{{- $_ := set $data "ENCRYPTION_KEY" (ternary (b64enc ($s.encryptionKey | toString)) (get $existing "ENCRYPTION_KEY" | default (randAlphaNum 64 | sha256sum | b64enc)) (not (empty $s.encryptionKey))) }}
{{- $_ := set $data "DATABASE_URL" (b64enc $s.databaseUrl) }}
{{- if $s.redisUrl }}
{{- $_ := set $data "REDIS_URL" (b64enc $s.redisUrl) }}
{{- end }}
{{- $_ := set .Values "__codexGatewaySecretData" $data }}
{{- end }}
{{- toYaml (get .Values "__codexGatewaySecretData") }}
{{- end }}

{{/* Pod annotation that rolls the pods when the chart-generated Secret changes (env vars
from a Secret are read only at container start). */}}
{{- define "codex-gateway.secretChecksum" -}}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include "codex-gateway.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{/* One env var from the Secret; call with (dict "ctx" $ "name" "ADMIN_TOKEN" "item" "adminToken"). */}}
{{- define "codex-gateway.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "codex-gateway.secretName" .ctx }}
      key: {{ include "codex-gateway.secretKey" (dict "ctx" .ctx "item" .item) | required (printf "codex-gateway: secrets.existingSecretKeys.%s must name the key holding %s" .item .name) }}
{{- end }}

{{/* Environment of the control plane and of the migration Job (same binary, same config). */}}
{{- define "codex-gateway.controlPlane.env" -}}
{{ include "codex-gateway.secretEnv" (dict "ctx" . "name" "DATABASE_URL" "item" "databaseUrl") }}
{{ include "codex-gateway.secretEnv" (dict "ctx" . "name" "ADMIN_TOKEN" "item" "adminToken") }}
{{ include "codex-gateway.secretEnv" (dict "ctx" . "name" "DATA_PLANE_TOKEN" "item" "dataPlaneToken") }}
{{ include "codex-gateway.secretEnv" (dict "ctx" . "name" "ENCRYPTION_KEY" "item" "encryptionKey") }}
{{- if include "codex-gateway.redisEnabled" . }}
{{ include "codex-gateway.secretEnv" (dict "ctx" . "name" "REDIS_URL" "item" "redisUrl") }}
{{- end }}
- name: GRPC_ADDR
  value: {{ printf "0.0.0.0:%v" .Values.controlPlane.grpcPort | quote }}
- name: METRICS_ADDR
  value: {{ printf "0.0.0.0:%v" .Values.controlPlane.metricsPort | quote }}
- name: CONSOLE_ADDR
  value: {{ printf "0.0.0.0:%v" .Values.controlPlane.consolePort | quote }}
{{ include "codex-gateway.commonEnv" . }}
{{- end }}

{{/* Environment shared by every container. */}}
{{- define "codex-gateway.commonEnv" -}}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.usageStream }}
- name: USAGE_STREAM
  value: {{ . | quote }}
{{- end }}
{{- with .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* PodDisruptionBudget spec body; call with the plane's podDisruptionBudget values. */}}
{{- define "codex-gateway.pdbBudget" -}}
{{- $min := .minAvailable }}
{{- $max := .maxUnavailable }}
{{- $hasMin := not (or (kindIs "invalid" $min) (eq (toString $min) "")) }}
{{- $hasMax := not (or (kindIs "invalid" $max) (eq (toString $max) "")) }}
{{- if and $hasMin $hasMax }}
{{- fail "codex-gateway: set only one of podDisruptionBudget.minAvailable and podDisruptionBudget.maxUnavailable (set the other to an empty string or null)" }}
{{- else if $hasMin }}
minAvailable: {{ $min }}
{{- else if $hasMax }}
maxUnavailable: {{ $max }}
{{- else }}
{{- fail "codex-gateway: podDisruptionBudget is enabled but neither minAvailable nor maxUnavailable is set" }}
{{- end }}
{{- end }}

{{/* topologySpreadConstraints with the component's selector filled in where missing;
call with (dict "ctx" $ "component" "data-plane" "constraints" list). */}}
{{- define "codex-gateway.topologySpread" -}}
{{- $selector := include "codex-gateway.selectorLabels" (dict "ctx" .ctx "component" .component) | fromYaml }}
{{- $out := list }}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $out = append $out $c }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Prometheus scrape annotations; call with (dict "ctx" $ "port" 9090). */}}
{{- define "codex-gateway.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.prometheusScrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
