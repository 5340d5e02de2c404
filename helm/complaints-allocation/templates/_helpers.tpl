{{/*
Names, labels and the pieces every pod shares. Kubernetes names are at most 63 characters: the
release prefix is cut, never the component suffix, so two components can never collide.
*/}}

{{- define "ca.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ca.fullname" -}}
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

{{/* "<fullname>-<suffix>" within 63 characters. Call with (dict "ctx" $ "suffix" "consumer"). */}}
{{- define "ca.componentName" -}}
{{- $max := sub 62 (len .suffix) | int -}}
{{- printf "%s-%s" (include "ca.fullname" .ctx | trunc $max | trimSuffix "-") .suffix -}}
{{- end -}}

{{- define "ca.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; immutable once a Deployment exists, so nothing version-dependent here. */}}
{{- define "ca.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ca.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Standard labels. Call with (dict "ctx" $ "component" "consumer"); component may be empty. */}}
{{- define "ca.labels" -}}
helm.sh/chart: {{ include "ca.chart" .ctx }}
{{ include "ca.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: complaints-allocation
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ca.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ca.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Image reference. Call with (dict "ctx" $ "image" .Values.explainer.image). A component naming its own
repository takes nothing else from .Values.image but the pull policy: a digest or tag of the runtime
image must never be applied to another image.
*/}}
{{- define "ca.imageValues" -}}
{{- $own := default dict .image -}}
{{- if $own.repository -}}
{{- toJson (merge (deepCopy $own) (dict "tag" "" "digest" "" "pullPolicy" .ctx.Values.image.pullPolicy)) -}}
{{- else -}}
{{- toJson (merge (deepCopy $own) (deepCopy .ctx.Values.image)) -}}
{{- end -}}
{{- end -}}

{{- define "ca.image" -}}
{{- $img := include "ca.imageValues" . | fromJson -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .ctx.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "ca.pullPolicy" -}}
{{- (include "ca.imageValues" . | fromJson).pullPolicy -}}
{{- end -}}

{{- define "ca.secretName" -}}
{{- default (include "ca.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The key holding credential NAME in the Secret the pods read: secrets.keys.NAME in an existing Secret (made
by Strimzi, Bitnami, an operator), else NAME. Pods always see it under NAME. Call with (dict "ctx" $ "name" NAME). */}}
{{- define "ca.secretKey" -}}
{{- if .ctx.Values.secrets.existingSecret -}}
{{- default .name (index .ctx.Values.secrets.keys .name) -}}
{{- else -}}
{{- .name -}}
{{- end -}}
{{- end -}}

{{/* Kafka security protocol derived from SASL and TLS, so the two cannot disagree. */}}
{{- define "ca.kafkaProtocol" -}}
{{- printf "%s%s" (ternary "SASL_" "" (ne .Values.kafka.sasl.mechanism "")) (ternary "SSL" "PLAINTEXT" .Values.kafka.tls.enabled) -}}
{{- end -}}

{{- define "ca.secretsDir" -}}/var/run/secrets/complaints-allocation{{- end -}}
{{- define "ca.cacheDir" -}}/var/cache/complaints-allocation{{- end -}}

{{/*
Non-secret environment shared by every process, as a dict: the ConfigMap renders it, and the
pre-install topics Job inlines it (a hook runs before the ConfigMap exists).
*/}}
{{- define "ca.commonEnv" -}}
{{- $v := .Values -}}
{{- $env := dict
  "KAFKA_BOOTSTRAP_SERVERS" $v.kafka.bootstrapServers
  "KAFKA_SECURITY_PROTOCOL" (include "ca.kafkaProtocol" .)
  "REDIS_URL" $v.redis.url
  "ALLOCATOR_REDIS_PREFIX" $v.redis.prefix
  "ALLOCATOR_TOPIC_COMPLAINTS" $v.kafka.topics.complaints
  "ALLOCATOR_TOPIC_ALLOCATIONS" $v.kafka.topics.allocations
  "ALLOCATOR_TOPIC_SHADOW" $v.kafka.topics.shadow
  "ALLOCATOR_TOPIC_DLQ" $v.kafka.topics.dlq
  "ALLOCATOR_TOPIC_FEEDBACK" $v.kafka.topics.feedback
  "ALLOCATOR_TOPIC_PARTITIONS" (toString $v.kafka.partitions)
  "ALLOCATOR_TOPIC_REPLICATION" (toString $v.kafka.replication)
  "ALLOCATOR_CREATE_TOPICS" "false"
  "ALLOCATOR_METRICS_PORT" (toString $v.metricsPort)
  "ALLOCATOR_LOG_LEVEL" $v.logLevel
  "ALLOCATOR_MODEL_CACHE_DIR" (printf "%s/models" (include "ca.cacheDir" .))
  "ALLOCATOR_SECRETS_DIR" (include "ca.secretsDir" .)
  "HF_HOME" (printf "%s/hf" (include "ca.cacheDir" .))
  "HOME" "/tmp"
-}}
{{- if $v.kafka.sasl.mechanism -}}
{{- $_ := set $env "KAFKA_SASL_MECHANISM" $v.kafka.sasl.mechanism -}}
{{- $_ := set $env "KAFKA_SASL_USERNAME" $v.kafka.sasl.username -}}
{{- end -}}
{{- if $v.kafka.tls.enabled -}}
{{- $_ := set $env "KAFKA_SSL_CAFILE" (printf "/etc/complaints-allocation/kafka-tls/%s" $v.kafka.tls.caKey) -}}
{{- if $v.kafka.tls.certKey -}}
{{- $_ := set $env "KAFKA_SSL_CERTFILE" (printf "/etc/complaints-allocation/kafka-tls/%s" $v.kafka.tls.certKey) -}}
{{- $_ := set $env "KAFKA_SSL_KEYFILE" (printf "/etc/complaints-allocation/kafka-tls/%s" $v.kafka.tls.keyKey) -}}
{{- end -}}
{{- end -}}
{{- if $v.redis.tls.enabled -}}
{{- $_ := set $env "REDIS_SSL_CA_CERTS" (printf "/etc/complaints-allocation/redis-tls/%s" $v.redis.tls.caKey) -}}
{{- end -}}
{{- range $k, $val := $v.env -}}
{{- $_ := set $env $k (toString $val) -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}

{{/* Component env map as a container env list: {KEY: value} -> [{name, value}]. */}}
{{- define "ca.envList" -}}
{{- $out := list -}}
{{- range $k, $val := . -}}
{{- $out = append $out (dict "name" $k "value" (toString $val)) -}}
{{- end -}}
{{- if $out }}{{ toYaml $out }}{{ end -}}
{{- end -}}

{{/* Secret keys a process reads as files, given the features turned on. Call with (dict "ctx" $ "extra" list). */}}
{{- define "ca.secretKeys" -}}
{{- $keys := list -}}
{{- if .ctx.Values.kafka.sasl.mechanism }}{{ $keys = append $keys "KAFKA_SASL_PASSWORD" }}{{ end -}}
{{- if and .ctx.Values.redis.auth.enabled (not .noRedis) }}{{ $keys = append $keys "REDIS_PASSWORD" }}{{ end -}}
{{- toJson (concat $keys (default list .extra)) -}}
{{- end -}}

{{/*
Volumes of a runtime pod: secrets as files (only the keys this process needs), TLS material,
and the writable emptyDirs a read-only root filesystem needs. Call with
(dict "ctx" $ "secretName" name "keys" (list ...) "cacheSize" "2Gi").
*/}}
{{- define "ca.volumes" -}}
{{- $v := .ctx.Values -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
- name: cache
  emptyDir:
    sizeLimit: {{ default "1Gi" .cacheSize }}
{{- if .keys }}
- name: secrets
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
    {{- range .keys }}
      - key: {{ include "ca.secretKey" (dict "ctx" $.ctx "name" .) }}
        path: {{ . }}
    {{- end }}
{{- end }}
{{- if $v.kafka.tls.enabled }}
- name: kafka-tls
  secret:
    secretName: {{ required "kafka.tls.existingSecret is required when kafka.tls.enabled" $v.kafka.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if $v.redis.tls.enabled }}
- name: redis-tls
  secret:
    secretName: {{ required "redis.tls.existingSecret is required when redis.tls.enabled" $v.redis.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "ca.volumeMounts" -}}
{{- $v := .ctx.Values -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: {{ include "ca.cacheDir" .ctx }}
{{- if .keys }}
- name: secrets
  mountPath: {{ include "ca.secretsDir" .ctx }}
  readOnly: true
{{- end }}
{{- if $v.kafka.tls.enabled }}
- name: kafka-tls
  mountPath: /etc/complaints-allocation/kafka-tls
  readOnly: true
{{- end }}
{{- if $v.redis.tls.enabled }}
- name: redis-tls
  mountPath: /etc/complaints-allocation/redis-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* HF_TOKEN for private model repositories: optional, so a Secret without it is fine. */}}
{{- define "ca.hfTokenEnv" -}}
{{- if or .Values.secrets.hfToken .Values.secrets.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "ca.secretName" . }}
      key: {{ include "ca.secretKey" (dict "ctx" $ "name" "HF_TOKEN") }}
      optional: true
{{- end }}
{{- end -}}

{{/* Restarts pods when the configuration they read changes (the Secret is hashed from values: a
generated explainer token must not restart pods on every upgrade). */}}
{{- define "ca.checksums" -}}
checksum/config: {{ include "ca.commonEnv" . | sha256sum }}
checksum/secret: {{ list .Values.secrets .Values.kafka.sasl .Values.redis.auth .Values.explainer.token .Values.trainer.wandb.apiKey | toJson | sha256sum }}
{{- end -}}

{{/* Pod scheduling fields shared by every component. Call with the component's values. */}}
{{- define "ca.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}
