{{/* Names, labels and the two generated configs shared by the templates. */}}

{{- define "corvid.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "corvid.fullname" -}}
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

{{- define "corvid.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "corvid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (list $ "server"). */}}
{{- define "corvid.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "corvid.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "corvid.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "corvid.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "corvid.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if not .Values.gpu.enabled -}}{{- $tag = printf "%s%s" $tag .Values.image.cpuTagSuffix -}}{{- end -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- define "corvid.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "corvid.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "corvid.jwtSecretName" -}}
{{- default (printf "%s-jwt" (include "corvid.fullname" .)) .Values.auth.jwt.existingSecret -}}
{{- end -}}

{{- define "corvid.modelClaimName" -}}
{{- default (printf "%s-models" (include "corvid.fullname" .)) .Values.model.pvc.existingClaim -}}
{{- end -}}

{{/* host:port of the server Service, as clients in the cluster reach it. */}}
{{- define "corvid.serverAddress" -}}
{{- printf "%s.%s.svc:%d" (include "corvid.fullname" .) .Release.Namespace (int .Values.server.port) -}}
{{- end -}}

{{- define "corvid.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- list (printf "http://%s-etcd.%s.svc:2379" (include "corvid.fullname" .) .Release.Namespace) | toJson -}}
{{- else -}}
{{- .Values.controlplane.etcd.endpoints | toJson -}}
{{- end -}}
{{- end -}}

{{/*
server.json in the form corvid-server parses (server/config.c); the chart's test runs
`corvid-server --check-config` on it. Paths are the pod's mount points. GPU mode: CUDA,
and the model sharded over the pod's GPUs (tp = gpu.count).
*/}}
{{- define "corvid.serverConfig" -}}
{{- $c := .Values.server.config -}}
{{- $cfg := dict
  "listen" (printf "0.0.0.0:%d" (int .Values.server.port))
  "metrics_listen" (printf "0.0.0.0:%d" (int .Values.server.metricsPort))
  "model" (printf "/models/%s" .Values.model.file)
  "model_version" .Values.model.version
  "threads" $c.threads
  "max_running" $c.maxRunning
  "max_waiting" $c.maxWaiting
  "kv_block_tokens" $c.kvBlockTokens
  "max_batch_tokens" $c.maxBatchTokens
  "n_ctx" $c.ctx
  "kv_type" $c.kvType
  "kv_memory_mb" $c.kvMemoryMb
  "prefix_cache" (ternary 1 0 $c.prefixCache)
  "max_tokens_default" $c.maxTokensDefault
  "drain_timeout_s" $c.drainTimeoutSeconds
  "max_connection_age_s" $c.maxConnectionAgeSeconds
  "max_connection_age_grace_s" $c.maxConnectionAgeGraceSeconds
  "model_dirs" "/models"
-}}
{{- with $c.modelSources -}}
{{- $_ := set $cfg "model_sources" (join "," .) -}}
{{- $_ := set $cfg "model_cache_dir" "/tmp/model-cache" -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- $_ := set $cfg "tls_cert" "/etc/corvid/tls/tls.crt" -}}
{{- $_ := set $cfg "tls_key" "/etc/corvid/tls/tls.key" -}}
{{- $_ := set $cfg "health_listen" (printf "0.0.0.0:%d" (int .Values.server.healthPort)) -}}
{{- end -}}
{{- if include "corvid.serverAuthConfig" . -}}
{{- $_ := set $cfg "auth_config" "/etc/corvid/auth.json" -}}
{{- end -}}
{{- with .Values.tracing.otlpEndpoint -}}
{{- $_ := set $cfg "otlp_endpoint" . -}}
{{- $_ := set $cfg "trace_sample_ratio" $.Values.tracing.sampleRatio -}}
{{- end -}}
{{- $rc := .Values.responseCache -}}
{{- if ne $rc.backend "off" -}}
{{- $_ := set $cfg "response_cache" $rc.backend -}}
{{- $_ := set $cfg "response_cache_mb" $rc.memoryMb -}}
{{- $_ := set $cfg "response_cache_ttl_s" $rc.ttlSeconds -}}
{{- $_ := set $cfg "response_cache_timeout_ms" $rc.timeoutMs -}}
{{- $_ := set $cfg "response_cache_scope" $rc.scope -}}
{{- $_ := set $cfg "response_cache_live_sources" (ternary 1 0 $rc.liveSources) -}}
{{- if eq $rc.backend "redis" -}}
{{- $_ := set $cfg "response_cache_redis" (ternary (printf "%s-redis:6379" (include "corvid.fullname" .)) $rc.redis.address $rc.redis.deploy) -}}
{{- end -}}
{{- end -}}
{{- if .Values.gpu.enabled -}}
{{- $_ := set $cfg "device" "cuda" -}}
{{- $_ := set $cfg "tp" (int .Values.gpu.count) -}}
{{- end -}}
{{- toPrettyJson $cfg -}}
{{- end -}}

{{/*
auth.json: the access policy in the form server/auth.h parses (jwt, allowlist,
rate_limit, audit_log), read through server.json's auth_config. Empty when off.
*/}}
{{- define "corvid.serverAuthConfig" -}}
{{- $auth := dict -}}
{{- if .Values.auth.enabled -}}
{{- $j := .Values.auth.jwt -}}
{{- $key := dict "alg" $j.algorithm -}}
{{- if eq $j.algorithm "HS256" -}}
{{- $_ := set $key "secret_file" "/etc/corvid/jwt/hmac.key" -}}
{{- else -}}
{{- $_ := set $key "public_key_file" "/etc/corvid/jwt/public.pem" -}}
{{- end -}}
{{- if $j.keyId -}}{{- $_ := set $key "kid" $j.keyId -}}{{- end -}}
{{- $jwt := dict "keys" (list $key) -}}
{{- if $j.issuer -}}{{- $_ := set $jwt "issuer" $j.issuer -}}{{- end -}}
{{- if $j.audience -}}{{- $_ := set $jwt "audience" $j.audience -}}{{- end -}}
{{- $_ := set $auth "jwt" $jwt -}}
{{- if gt (float64 .Values.auth.rateLimit.requestsPerSecond) 0.0 -}}
{{- $_ := set $auth "rate_limit" (dict "per_second" .Values.auth.rateLimit.requestsPerSecond "burst" .Values.auth.rateLimit.burst) -}}
{{- end -}}
{{- if .Values.auth.auditLog -}}{{- $_ := set $auth "audit_log" "-" -}}{{- end -}}
{{- end -}}
{{- if .Values.auth.allowlist -}}
{{- $_ := set $auth "allowlist" .Values.auth.allowlist -}}
{{- end -}}
{{- if $auth -}}{{- toPrettyJson $auth -}}{{- end -}}
{{- end -}}

{{/*
controlplane.json in the form controlplane/cp_config.h parses (unknown keys are refused;
the chart's test runs `corvid-controlplane --check-config` on it). The fleet comes from
the headless Service; every replica campaigns for the lease, one leads. Under TLS it
verifies the servers with the TLS Secret's ca.crt against the Service's name (it calls
pod IPs); under auth it presents the admin token read from the mounted Secret. Both
are files in whole-volume Secret mounts (controlplane.yaml), which the control plane
re-reads when the kubelet updates them; a token from server_token_env would be read
only once, at start.
*/}}
{{- define "corvid.controlplaneConfig" -}}
{{- $cp := .Values.controlplane -}}
{{- $r := $cp.rollout -}}
{{- $defaults := dict
  "strategy" $r.strategy
  "max_error_rate" $r.analysis.maxErrorRate
  "max_p99_ttft_ms" (mulf $r.analysis.maxP99TtftSeconds 1000)
  "window_ms" (mul $r.analysis.windowSeconds 1000)
  "min_requests" $r.analysis.minRequests
  "failure_limit" $r.analysis.failureLimit
-}}
{{- if eq $r.strategy "canary" -}}{{- $_ := set $defaults "steps" $r.steps -}}{{- end -}}
{{- $cfg := dict
  "etcd" (include "corvid.etcdEndpoints" . | fromJsonArray | join ",")
  "prefix" $cp.etcd.prefix
  "dns" (dict
    "name" (printf "%s-servers.%s.svc.cluster.local" (include "corvid.fullname" .) .Release.Namespace)
    "port" (int .Values.server.port)
    "refresh_ms" (mul $cp.dnsRefreshSeconds 1000))
  "election_ttl_s" $cp.leaseTtlSeconds
  "smoke_prompt" .Values.tests.prompt
  "defaults" $defaults
  "metrics_listen" (printf "0.0.0.0:%d" (int $cp.metricsPort))
-}}
{{- if .Values.tls.enabled -}}
{{- $name := default (printf "%s.%s.svc" (include "corvid.fullname" .) .Release.Namespace) $cp.serverName -}}
{{- $_ := set $cfg "server_tls" (dict "ca" "/etc/corvid/tls/ca.crt" "server_name" $name) -}}
{{- end -}}
{{- if .Values.auth.enabled -}}
{{- $_ := set $cfg "server_token_file" "/etc/corvid/admin-token/token" -}}
{{- end -}}
{{- with .Values.tracing.otlpEndpoint -}}
{{- $_ := set $cfg "otlp_endpoint" . -}}
{{- end -}}
{{- toPrettyJson $cfg -}}
{{- end -}}

{{/* Refuses values that the schema cannot relate to each other. */}}
{{- define "corvid.validate" -}}
{{- $s := .Values.server -}}
{{- if le (int $s.terminationGracePeriodSeconds) (add (int $s.preStopSleepSeconds) (int (ceil $s.config.drainTimeoutSeconds))) -}}
{{- fail (printf "server.terminationGracePeriodSeconds (%d) must exceed server.preStopSleepSeconds (%d) + server.config.drainTimeoutSeconds (%v): the pod would be killed while streams drain" (int $s.terminationGracePeriodSeconds) (int $s.preStopSleepSeconds) $s.config.drainTimeoutSeconds) -}}
{{- end -}}
{{- $a := .Values.autoscaling -}}
{{- if $a.enabled -}}
{{- if not .Values.metrics.prometheusRule.enabled -}}
{{- fail "autoscaling.enabled needs metrics.prometheusRule.enabled: the autoscaler queries its recording rules" -}}
{{- end -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- if lt (int $a.scaleDown.periodSeconds) (int $s.terminationGracePeriodSeconds) -}}
{{- fail (printf "autoscaling.scaleDown.periodSeconds (%d) must be at least server.terminationGracePeriodSeconds (%d): a pod must have drained before the next one is removed" (int $a.scaleDown.periodSeconds) (int $s.terminationGracePeriodSeconds)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.networkPolicy.enabled -}}
{{- /* A rule with no peers admits every source: refuse it rather than open the port. */ -}}
{{- if not .Values.networkPolicy.prometheus -}}
{{- fail "networkPolicy.prometheus is empty: the metrics rule would admit every source" -}}
{{- end -}}
{{- if not (or .Values.networkPolicy.clients .Values.controlplane.enabled .Values.tests.enabled) -}}
{{- fail "networkPolicy.clients is empty (and no control plane or test pod): the gRPC rule would admit every source" -}}
{{- end -}}
{{- end -}}
{{- if lt (int $s.config.maxBatchTokens) (int $s.config.maxRunning) -}}
{{- fail (printf "server.config.maxBatchTokens (%d) must be at least server.config.maxRunning (%d)" (int $s.config.maxBatchTokens) (int $s.config.maxRunning)) -}}
{{- end -}}
{{- $prev := 0 -}}
{{- range .Values.controlplane.rollout.steps -}}
{{- if le (int .) $prev -}}
{{- fail (printf "controlplane.rollout.steps must increase: %v" $.Values.controlplane.rollout.steps) -}}
{{- end -}}
{{- $prev = int . -}}
{{- end -}}
{{- if ne $prev 100 -}}
{{- fail (printf "controlplane.rollout.steps must end at 100 (full traffic to the candidate): %v" .Values.controlplane.rollout.steps) -}}
{{- end -}}
{{- $rc := .Values.responseCache -}}
{{- if and (eq $rc.backend "redis") (not $rc.redis.deploy) (not $rc.redis.address) -}}
{{- fail "responseCache.backend redis needs responseCache.redis.deploy or responseCache.redis.address (HOST:PORT)" -}}
{{- end -}}
{{- if and (eq $rc.scope "subject") (not .Values.auth.enabled) -}}
{{- fail "responseCache.scope subject needs auth.enabled: without tokens there are no subjects" -}}
{{- end -}}
{{- if and (eq .Values.model.source "download") (not .Values.model.uri) -}}
{{- fail "model.source=download needs model.uri (and model.sha256)" -}}
{{- end -}}
{{- if and .Values.model.uri (not .Values.model.sha256) -}}
{{- fail "model.uri is set but model.sha256 is empty: the download must be checked" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (or (not .Values.tls.cert) (not .Values.tls.key)) -}}
{{- fail "tls.enabled needs tls.existingSecret, or tls.cert and tls.key" -}}
{{- end -}}
{{- if and .Values.tls.enabled (eq (int .Values.server.healthPort) (int .Values.server.port)) -}}
{{- fail "server.healthPort must differ from server.port: the health port stays plaintext under TLS" -}}
{{- end -}}
{{- if .Values.auth.enabled -}}
{{- $j := .Values.auth.jwt -}}
{{- if and (not $j.existingSecret) (eq $j.algorithm "HS256") (lt (len $j.hmacSecret) 32) -}}
{{- fail "auth.jwt.hmacSecret must be at least 32 bytes (or use auth.jwt.existingSecret)" -}}
{{- end -}}
{{- if and (not $j.existingSecret) (ne $j.algorithm "HS256") (not $j.publicKey) -}}
{{- fail (printf "auth.jwt.algorithm %s needs auth.jwt.publicKey (or auth.jwt.existingSecret)" $j.algorithm) -}}
{{- end -}}
{{- if and (gt (float64 .Values.auth.rateLimit.requestsPerSecond) 0.0) (lt (int .Values.auth.rateLimit.burst) 1) -}}
{{- fail "auth.rateLimit.burst must be at least 1 when auth.rateLimit.requestsPerSecond is set" -}}
{{- end -}}
{{- if and .Values.controlplane.enabled (not .Values.auth.adminTokenSecret.name) -}}
{{- fail "auth.enabled with the control plane needs auth.adminTokenSecret.name (a token with the admin scope)" -}}
{{- end -}}
{{- if and .Values.tests.enabled (not .Values.auth.testTokenSecret.name) -}}
{{- fail "auth.enabled with tests.enabled needs auth.testTokenSecret.name (a token with the inference scope)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The HPA behaviour of autoscaling.scaleUp and scaleDown (KEDA passes it on to the
HPA it creates). Scale-down: the highest recommendation of its window, then at most
scaleDown.pods per period, so a leaving pod drains before the next one is picked. */}}
{{- define "corvid.autoscalingBehavior" -}}
{{- $a := .Values.autoscaling -}}
scaleUp:
  stabilizationWindowSeconds: {{ $a.scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Pods
      value: {{ $a.scaleUp.pods }}
      periodSeconds: {{ $a.scaleUp.periodSeconds }}
scaleDown:
  stabilizationWindowSeconds: {{ $a.scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Min
  policies:
    - type: Pods
      value: {{ $a.scaleDown.pods }}
      periodSeconds: {{ $a.scaleDown.periodSeconds }}
{{- end -}}

{{/* A ratio or seconds as a Kubernetes quantity in thousandths ("500m"). */}}
{{- define "corvid.milli" -}}
{{- printf "%dm" (int (round (mulf . 1000) 0)) -}}
{{- end -}}

{{/* Port the kubelet's gRPC probes use: the plaintext health port under TLS. */}}
{{- define "corvid.probePort" -}}
{{- if .Values.tls.enabled -}}{{ .Values.server.healthPort }}{{- else -}}{{ .Values.server.port }}{{- end -}}
{{- end -}}

{{/* corvidctl's TLS and token arguments for in-cluster clients. */}}
{{- define "corvid.clientArgs" -}}
{{- if .Values.tls.enabled }} --tls-ca /etc/corvid/tls/ca.crt{{ end -}}
{{- end -}}
