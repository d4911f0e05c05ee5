{{/*
Names, labels and the checks that make a bad combination of values fail at `helm install`
with the same advice the bridge would give at start-up.
*/}}

{{- define "pypi-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, cut to 63 characters (the DNS label limit of some name fields).
*/}}
{{- define "pypi-bridge.fullname" -}}
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

{{- define "pypi-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pypi-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pypi-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pypi-bridge.labels" -}}
helm.sh/chart: {{ include "pypi-bridge.chart" . }}
{{ include "pypi-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: bridge
app.kubernetes.io/part-of: pypi-kafka-bridge
{{- end }}

{{- define "pypi-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pypi-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* registry/repository:tag, or registry/repository@digest; the registry is optional. */}}
{{- define "pypi-bridge.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The pod's securityContext. With `openshift`, the user, group and fsGroup are left out: the
restricted SCC assigns them from the namespace's range and refuses pods that fix their own.
*/}}
{{- define "pypi-bridge.podSecurityContext" -}}
{{- $psc := .Values.podSecurityContext -}}
runAsNonRoot: true
{{- if not .Values.openshift }}
runAsUser: {{ $psc.runAsUser | int64 }}
runAsGroup: {{ $psc.runAsGroup | int64 }}
# Group ownership of the mounted Secrets, so the non-root user can read 0440 files.
fsGroup: {{ $psc.fsGroup | int64 }}
{{- end }}
{{- with $psc.fsGroupChangePolicy }}
fsGroupChangePolicy: {{ . }}
{{- end }}
{{- with $psc.supplementalGroups }}
supplementalGroups:
  {{- range . }}
  - {{ . | int64 }}
  {{- end }}
{{- end }}
{{- with $psc.seLinuxOptions }}
seLinuxOptions:
  {{- toYaml . | nindent 2 }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container's securityContext: locked down, with containerSecurityContext merged over. */}}
{{- define "pypi-bridge.containerSecurityContext" -}}
{{- $locked := dict
  "runAsNonRoot" true
  "readOnlyRootFilesystem" true
  "allowPrivilegeEscalation" false
  "privileged" false
  "capabilities" (dict "drop" (list "ALL"))
  "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- toYaml (mergeOverwrite $locked (deepCopy .Values.containerSecurityContext)) }}
{{- end }}

{{/*
The `job` label Prometheus gives this release's series: the Service's name through the
ServiceMonitor (and a plain Kubernetes scrape of the Service), <namespace>/<name> through the
PodMonitor (the Prometheus Operator's default job for a PodMonitor without jobLabel).
*/}}
{{- define "pypi-bridge.scrapeJob" -}}
{{- if .Values.podMonitor.enabled }}
{{- printf "%s/%s" (default .Release.Namespace .Values.podMonitor.namespace) (include "pypi-bridge.fullname" .) }}
{{- else }}
{{- include "pypi-bridge.fullname" . }}
{{- end }}
{{- end }}

{{/* Label matchers of this release's series in the alert rules. */}}
{{- define "pypi-bridge.alertSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "namespace=%q, job=%q" .Release.Namespace (include "pypi-bridge.scrapeJob" .) }}
{{- end }}
{{- end }}

{{/* Where the Kafka Secrets are mounted in the container. */}}
{{- define "pypi-bridge.tlsDir" -}}/etc/pypi-bridge/kafka-tls{{- end }}
{{- define "pypi-bridge.saslDir" -}}/etc/pypi-bridge/kafka-sasl{{- end }}

{{- define "pypi-bridge.usesTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{- define "pypi-bridge.usesSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/* True when the TLS Secret is mounted: TLS is on and the Secret supplies at least one file. */}}
{{- define "pypi-bridge.mountsTls" -}}
{{- $tls := .Values.kafka.tls }}
{{- if and (include "pypi-bridge.usesTls" .) $tls.existingSecret (or $tls.caKey $tls.certKey) }}true{{ end }}
{{- end }}

{{/*
The combinations the bridge refuses at start-up (bridge.config.kafka_settings), refused here
first so a bad release never reaches a crash loop.
*/}}
{{- define "pypi-bridge.validate" -}}
{{- $k := .Values.kafka }}
{{- $tls := $k.tls }}
{{- $sasl := $k.sasl }}
{{- if and $sasl.mechanism (not (include "pypi-bridge.usesSasl" .)) }}
{{- fail (printf "kafka.sasl.mechanism %s needs a SASL security protocol; set kafka.securityProtocol to SASL_SSL (or SASL_PLAINTEXT)" $sasl.mechanism) }}
{{- end }}
{{- if include "pypi-bridge.usesSasl" . }}
{{- if not $sasl.mechanism }}
{{- fail (printf "kafka.securityProtocol %s needs a SASL mechanism; set kafka.sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)" $k.securityProtocol) }}
{{- end }}
{{- if not (or $sasl.username $sasl.usernameKey) }}
{{- fail "SASL needs a user name; set kafka.sasl.username (or kafka.sasl.usernameKey in the Secret)" }}
{{- end }}
{{- if not (and $sasl.existingSecret $sasl.passwordKey) }}
{{- fail "SASL needs a password; set kafka.sasl.existingSecret and kafka.sasl.passwordKey" }}
{{- end }}
{{- end }}
{{- if and $sasl.usernameKey (not $sasl.existingSecret) }}
{{- fail "kafka.sasl.usernameKey reads the user name from kafka.sasl.existingSecret; set it too" }}
{{- end }}
{{- if ne (empty $tls.certKey) (empty $tls.keyKey) }}
{{- fail "mutual TLS needs both kafka.tls.certKey and kafka.tls.keyKey; give both or neither" }}
{{- end }}
{{- if and $tls.keyPasswordKey (not $tls.certKey) }}
{{- fail "kafka.tls.keyPasswordKey is for the client key; set kafka.tls.certKey and kafka.tls.keyKey too" }}
{{- end }}
{{- if and $tls.certKey (not $tls.existingSecret) }}
{{- fail "kafka.tls.certKey and keyKey are keys of kafka.tls.existingSecret; set it too" }}
{{- end }}
{{- if and $tls.existingSecret (not (include "pypi-bridge.usesTls" .)) }}
{{- fail (printf "kafka.tls.existingSecret is set but kafka.securityProtocol is %s; use SSL or SASL_SSL" $k.securityProtocol) }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled .Values.podMonitor.enabled }}
{{- fail "serviceMonitor.enabled and podMonitor.enabled would scrape every replica twice; enable one of the two" }}
{{- end }}
{{- end }}
