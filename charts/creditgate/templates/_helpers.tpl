{{/*
Names, labels, the image and the environment wiring, shared by every template.
*/}}

{{/* Chart name, 63 characters at most (DNS label). */}}
{{- define "creditgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already holds the
chart name. Truncated to 41 characters: the CronJob "<full name>-reconciler"
must fit Kubernetes' 52 for CronJobs, and "-migrations", "-test-readyz" the 63
of other names.
*/}}
{{- define "creditgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 41 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 41 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 41 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "creditgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "creditgate.labels" -}}
helm.sh/chart: {{ include "creditgate.chart" . }}
{{ include "creditgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: creditgate
{{- end }}

{{/* Selector labels: stable across upgrades, so never the version or the chart. */}}
{{- define "creditgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "creditgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component's objects: webhook, reconciler, migrations or test.
Usage: include "creditgate.componentLabels" (dict "ctx" $ "component" "webhook")
*/}}
{{- define "creditgate.componentLabels" -}}
{{ include "creditgate.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component.
Usage: include "creditgate.componentSelectorLabels" (dict "ctx" $ "component" "webhook")
*/}}
{{- define "creditgate.componentSelectorLabels" -}}
{{ include "creditgate.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ServiceAccount of the webhook and reconciler pods. */}}
{{- define "creditgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "creditgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of the migrations hook: a normal ServiceAccount does not exist
yet when a pre-install hook runs, so the chart makes a hook one.
*/}}
{{- define "creditgate.migrationsServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- printf "%s-migrations" (include "creditgate.fullname" .) }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: repository:tag, or repository@digest when a digest is given. */}}
{{- define "creditgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/* The reconciler's image: its own when reconciler.image.repository is set, else the one image. */}}
{{- define "creditgate.reconcilerImage" -}}
{{- $r := .Values.reconciler.image | default dict -}}
{{- if $r.repository }}
{{- if $r.digest }}
{{- printf "%s@%s" $r.repository $r.digest }}
{{- else }}
{{- printf "%s:%s" $r.repository ($r.tag | default .Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- else }}
{{- include "creditgate.image" . }}
{{- end }}
{{- end }}

{{/*
Base URL of the webhook Service for the helm test Pods: its DNS name, or with
tests.serviceAddress=env the Service's environment variables, which the kubelet
expands in a container's command (for clusters without Service DNS; the test
Pods run after the Service exists, so the variables are set).
*/}}
{{- define "creditgate.testServiceURL" -}}
{{- $fullname := include "creditgate.fullname" . }}
{{- if eq .Values.tests.serviceAddress "env" }}
{{- $var := $fullname | upper | replace "-" "_" }}
{{- printf "http://$(%s_SERVICE_HOST):$(%s_SERVICE_PORT_HTTP)" $var $var }}
{{- else }}
{{- printf "http://%s.%s.svc:%v" $fullname .Release.Namespace .Values.service.port }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding DATABASE_URL and the Clerk secrets. */}}
{{- define "creditgate.secretName" -}}
{{- default (include "creditgate.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/*
Name of the Secret the migrations hook reads: the pre-install hook runs before
the chart's Secret exists, so without existingSecret a hook Secret holding only
DATABASE_URL is made for it (templates/migrations-job.yaml).
*/}}
{{- define "creditgate.migrationsSecretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- printf "%s-migrations" (include "creditgate.fullname" .) }}
{{- end }}
{{- end }}

{{/*
creditgate.seconds turns a duration of whole hours, minutes and seconds
("90s", "1m30s", "2h", "0") into a number of seconds, so that templates can
compare durations with pod deadlines; anything else fails the render.
Usage: include "creditgate.seconds" (list "config.shutdownDelay" .Values.config.shutdownDelay)
*/}}
{{- define "creditgate.seconds" -}}
{{- $name := index . 0 }}
{{- $d := index . 1 | toString }}
{{- if not (regexMatch "^(0|([0-9]+h)?([0-9]+m)?([0-9]+s)?)$" $d) }}
{{- fail (printf "%s: %q is not a duration of whole hours, minutes and seconds (like 90s, 1m30s or 2h)" $name $d) }}
{{- end }}
{{- $h := regexFind "[0-9]+h" $d | trimSuffix "h" | default "0" | atoi }}
{{- $m := regexFind "[0-9]+m" $d | trimSuffix "m" | default "0" | atoi }}
{{- $s := regexFind "[0-9]+s" $d | trimSuffix "s" | default "0" | atoi }}
{{- add (mul $h 3600) (mul $m 60) $s }}
{{- end }}

{{/*
The ConfigMap's data: every non-secret variable, as YAML. Used by the
ConfigMap itself, by the config checksum and by the extraEnv clash check.
*/}}
{{- define "creditgate.configData" -}}
{{- $c := .Values.config }}
{{- $r := .Values.reconciler.config }}
{{- $_ := include "creditgate.seconds" (list "config.backlogRefresh" $c.backlogRefresh) }}
{{- $_ = include "creditgate.seconds" (list "reconciler.config.grace" $r.grace) }}
{{- $_ = include "creditgate.seconds" (list "reconciler.config.backfillOverlap" $r.backfillOverlap) -}}
SIGNUP_CREDITS: {{ $c.signupCredits | toString | quote }}
FORFEIT_ON_DELETE: {{ $c.forfeitOnDelete | toString | quote }}
LOG_LEVEL: {{ $c.logLevel | quote }}
LOG_FORMAT: {{ $c.logFormat | quote }}
HTTP_ADDR: ":8080"
METRICS_ADDR: ":9090"
API_ADDR: ":8081"
{{- $sas := list }}
{{- range $sa, $scopes := .Values.api.serviceAccounts }}
{{- $sas = append $sas (printf "%s:%s" $sa $scopes) }}
{{- end }}
CREDITS_API_SERVICE_ACCOUNTS: {{ join " " $sas | quote }}
DB_MAX_CONNS: {{ $c.dbMaxConns | toString | quote }}
DB_LOCK_TIMEOUT: {{ $c.dbLockTimeout | quote }}
BODY_MEMORY_LIMIT: {{ $c.bodyMemoryLimit | quote }}
BACKLOG_REFRESH: {{ $c.backlogRefresh | quote }}
SHUTDOWN_DELAY: {{ $c.shutdownDelay | quote }}
SHUTDOWN_TIMEOUT: {{ $c.shutdownTimeout | quote }}
CLERK_API_URL: {{ $c.clerk.apiURL | quote }}
CLERK_API_RPS: {{ $c.clerk.apiRPS | toString | quote }}
OUTBOX_MAX_ATTEMPTS: {{ $c.clerk.outboxMaxAttempts | toString | quote }}
CLERK_AUTHORIZED_PARTIES: {{ join " " $c.clerk.authorizedParties | quote }}
{{- with $c.otel.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- with $c.otel.tracesEndpoint }}
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: {{ . | quote }}
{{- end }}
RECONCILE_TIMEOUT: {{ $r.timeout | quote }}
RECONCILE_GRACE: {{ $r.grace | quote }}
RECONCILE_MAX_ATTEMPTS: {{ $r.maxAttempts | toString | quote }}
RECONCILE_BATCH: {{ $r.batch | toString | quote }}
BACKFILL_PAGE_SIZE: {{ $r.backfillPageSize | toString | quote }}
BACKFILL_MAX_PAGES: {{ $r.backfillMaxPages | toString | quote }}
BACKFILL_OVERLAP: {{ $r.backfillOverlap | quote }}
SWEEP_INTERVAL: {{ $r.sweepInterval | quote }}
SWEEP_MAX_DELETIONS: {{ $r.sweepMaxDeletions | toString | quote }}
PAYLOAD_RETENTION: {{ $r.payloadRetention | quote }}
{{- with $r.pushgatewayURL }}
PUSHGATEWAY_URL: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
creditgate.env is the one environment wiring of the containers: envFrom the
ConfigMap, the secrets from the chart's Secret or existingSecret, then
extraEnv. The webhook Deployment and the reconciler CronJob get exactly the
same wiring; the migrations hook gets DATABASE_URL and LOG_FORMAT only, since
it runs before the ConfigMap and the chart's Secret exist.
Usage: include "creditgate.env" (dict "ctx" $ "component" "webhook")
*/}}
{{- define "creditgate.env" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- if eq .component "migrations" -}}
env:
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "creditgate.migrationsSecretName" $ctx }}
        key: {{ and $v.secret.existingSecret $v.secret.keys.migrationDatabaseURL | default $v.secret.keys.databaseURL }}
  - name: LOG_FORMAT
    value: {{ $v.config.logFormat | quote }}
  {{- with $v.migrations.runtimeRole }}
  - name: RUNTIME_ROLE
    value: {{ . | quote }}
  {{- end }}
{{- else }}
{{- $managed := list "DATABASE_URL" "CLERK_WEBHOOK_SIGNING_SECRET" "CLERK_SECRET_KEY" "CREDITS_API_KEYS" "POD_NAMESPACE" }}
{{- $managed = concat $managed (keys (include "creditgate.configData" $ctx | fromYaml)) -}}
envFrom:
  - configMapRef:
      name: {{ include "creditgate.fullname" $ctx }}
env:
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "creditgate.secretName" $ctx }}
        key: {{ $v.secret.keys.databaseURL }}
  - name: CLERK_WEBHOOK_SIGNING_SECRET
    valueFrom:
      secretKeyRef:
        name: {{ include "creditgate.secretName" $ctx }}
        key: {{ $v.secret.keys.signingSecret }}
  - name: CLERK_SECRET_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "creditgate.secretName" $ctx }}
        key: {{ $v.secret.keys.clerkSecretKey }}
        optional: true
  - name: CREDITS_API_KEYS
    valueFrom:
      secretKeyRef:
        name: {{ include "creditgate.secretName" $ctx }}
        key: {{ $v.secret.keys.creditsAPIKeys }}
        optional: true
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
{{- range $v.extraEnv }}
{{- if has .name $managed }}
{{- fail (printf "extraEnv: %s is set by the chart; set it through its value (see values.yaml)" .name) }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checks that fail the render when the settings cannot work together. Included
by the Deployment and the CronJob.
*/}}
{{- define "creditgate.validate" -}}
{{- $c := .Values.config }}
{{- $budget := .Values.databaseConnectionBudget | int }}
{{- if gt $budget 0 }}
{{- $peak := include "creditgate.peakConnections" . | atoi }}
{{- if gt $peak $budget }}
{{- fail (printf "databaseConnectionBudget (%d) is below this release's peak of %d PostgreSQL connections: %s. Raise the budget (and PostgreSQL's max_connections), or lower config.dbMaxConns or the replicas" $budget $peak (include "creditgate.peakConnectionsWhy" .)) }}
{{- end }}
{{- end }}
{{- $delay := include "creditgate.seconds" (list "config.shutdownDelay" $c.shutdownDelay) | atoi }}
{{- $drain := include "creditgate.seconds" (list "config.shutdownTimeout" $c.shutdownTimeout) | atoi }}
{{- $grace := .Values.webhook.terminationGracePeriodSeconds | int }}
{{- if le $grace (add $delay $drain) }}
{{- fail (printf "webhook.terminationGracePeriodSeconds (%d) must be longer than config.shutdownDelay + config.shutdownTimeout (%ds + %ds), or Kubernetes kills pods mid-drain" $grace $delay $drain) }}
{{- end }}
{{- if .Values.reconciler.enabled }}
{{- $timeout := include "creditgate.seconds" (list "reconciler.config.timeout" .Values.reconciler.config.timeout) | atoi }}
{{- $deadline := .Values.reconciler.activeDeadlineSeconds | int }}
{{- if ge $timeout $deadline }}
{{- fail (printf "reconciler.config.timeout (RECONCILE_TIMEOUT, %ds) must be shorter than reconciler.activeDeadlineSeconds (%d), so that a run ends and records itself before it is killed" $timeout $deadline) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod security context, shared by every pod. */}}
{{- define "creditgate.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Container security context, shared by every container. */}}
{{- define "creditgate.securityContext" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/*
creditgate.alertRules renders files/alerts.yaml, the one source of the alerts,
into a YAML list of rule objects (alert, expr, for, labels, annotations) for
this release: placeholders become the release's selectors and thresholds, the
runbook anchor becomes runbook_url, monitoring.alerts.overrides replace an
alert's for and threshold (an override naming no alert, or a threshold of an
alert that has none, fails the render), and disabled alerts are dropped. The PrometheusRule and the
Grafana alert rules are both rendered from it.
*/}}
{{- define "creditgate.alertRules" -}}
{{- $fullname := include "creditgate.fullname" . }}
{{- $a := .Values.monitoring.alerts }}
{{- $sel := $a.webhookSelector | default (printf "namespace=%q,job=%q" .Release.Namespace $fullname) }}
{{- $src := .Files.Get "files/alerts.yaml" }}
{{- $src = $src | replace "__WEBHOOK__" $sel }}
{{- $src = $src | replace "__NAMESPACE__" .Release.Namespace }}
{{- $src = $src | replace "__DEPLOYMENT__" $fullname }}
{{- $src = $src | replace "__CRONJOB__" (printf "%s-reconciler" $fullname) }}
{{- $overrides := $a.overrides | default dict }}
{{- $rules := list }}
{{- $names := list }}
{{- range (fromYaml $src).alerts }}
{{- $names = append $names .alert }}
{{- $o := get $overrides .alert | default dict }}
{{- $expr := .expr }}
{{- if hasKey . "threshold" }}
{{- $expr = $expr | replace "__THRESHOLD__" (toString (ternary $o.threshold .threshold (hasKey $o "threshold"))) }}
{{- else if hasKey $o "threshold" }}
{{- fail (printf "monitoring.alerts.overrides.%s.threshold: %s has no threshold to override (only its for)" .alert .alert) }}
{{- end }}
{{- if not (has .alert $a.disabled) }}
{{- $labels := merge (dict "severity" .severity) (deepCopy $a.labels) }}
{{- $ann := dict "summary" .summary "description" .description "runbook_url" (printf "%s#%s" $a.runbookBaseURL (.alert | lower)) }}
{{- $rules = append $rules (dict "alert" .alert "expr" $expr "for" ($o.for | default .for) "labels" $labels "annotations" $ann) }}
{{- end }}
{{- end }}
{{- range $name, $_ := $overrides }}
{{- if not (has $name $names) }}
{{- fail (printf "monitoring.alerts.overrides: there is no alert named %s (the alerts: %s)" $name (join ", " $names)) }}
{{- end }}
{{- end }}
{{- toYaml (dict "rules" $rules) }}
{{- end }}

{{/*
The most PostgreSQL connections the release opens at once: every webhook pod
the Deployment may run (the HPA's maximum, or replicas), one more during a
rolling update (maxSurge 1), each with its pool (config.dbMaxConns) and the
readiness probe's own connection; the reconciler (4; its CronJob forbids
overlapping runs); the migrations hook (2), which runs while the old pods
serve. (cmd/webhook and cmd/reconciler open pools of these sizes.)
*/}}
{{- define "creditgate.peakPods" -}}
{{- if .Values.autoscaling.enabled }}{{ add (.Values.autoscaling.maxReplicas | int) 1 }}{{ else }}{{ add (.Values.webhook.replicas | int) 1 }}{{ end }}
{{- end }}
{{- define "creditgate.peakConnections" -}}
{{- $pods := include "creditgate.peakPods" . | atoi }}
{{- $reconciler := ternary 4 0 .Values.reconciler.enabled }}
{{- $migrations := ternary 2 0 .Values.migrations.enabled }}
{{- add (mul $pods (add (.Values.config.dbMaxConns | int) 1)) $reconciler $migrations }}
{{- end }}
{{- define "creditgate.peakConnectionsWhy" -}}
{{- $pods := include "creditgate.peakPods" . | atoi }}
{{- printf "%d webhook pods at most (%s, +1 during a rolling update) × (config.dbMaxConns %d + 1 for readiness)%s%s" $pods (ternary "autoscaling.maxReplicas" "webhook.replicas" .Values.autoscaling.enabled) (.Values.config.dbMaxConns | int) (ternary " + 4 for the reconciler" "" .Values.reconciler.enabled) (ternary " + 2 for the migrations" "" .Values.migrations.enabled) }}
{{- end }}
