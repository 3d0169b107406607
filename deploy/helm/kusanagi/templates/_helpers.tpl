{{/* The chart's name. */}}
{{- define "kusanagi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-kusanagi, or the release name if it contains the chart's name. */}}
{{- define "kusanagi.fullname" -}}
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

{{/* The name of one stage's objects: <fullname>-<stage>. */}}
{{- define "kusanagi.stageFullname" -}}
{{- printf "%s-%s" (include "kusanagi.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kusanagi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "kusanagi.labels" -}}
helm.sh/chart: {{ include "kusanagi.chart" . }}
{{ include "kusanagi.selectorLabels" . }}
app.kubernetes.io/part-of: kusanagi
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selects every pod of the release. */}}
{{- define "kusanagi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kusanagi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one stage's objects; takes (dict "root" $ "name" <stage>). */}}
{{- define "kusanagi.stageLabels" -}}
{{ include "kusanagi.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* Selects one stage's pods; takes (dict "root" $ "name" <stage>). */}}
{{- define "kusanagi.stageSelectorLabels" -}}
{{ include "kusanagi.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "kusanagi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kusanagi.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kusanagi.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "kusanagi.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kusanagi.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The topology file as mounted: .Values.topology through tpl. */}}
{{- define "kusanagi.topology" -}}
{{- tpl .Values.topology . }}
{{- end }}

{{/* Deployment or StatefulSet for a stage; takes (dict "root" $ "name" <stage> "stage" <values>). */}}
{{- define "kusanagi.workloadKind" -}}
{{- $kind := default .root.Values.workloadKind .stage.workloadKind }}
{{- if not (has $kind (list "Deployment" "StatefulSet")) }}
{{- fail (printf "stages.%s.workloadKind (or workloadKind) must be Deployment or StatefulSet, not %q" .name $kind) }}
{{- end }}
{{- $kind }}
{{- end }}

{{/*
Checks the values once (included by the ConfigMap): the stage names, the
single tier copy, the HPA types and bounds.
*/}}
{{- define "kusanagi.validate" -}}
{{- $known := list "ingest" "screen" "decide" "analyze" "archive" "tier" "view" }}
{{- $_ := required "keys.existingSecret: name the Secret that holds the API keys file (see NOTES.txt)" .Values.keys.existingSecret }}
{{- $_ := required "keys.secretKey: the key of keys.existingSecret that holds the keys file" .Values.keys.secretKey }}
{{- if lt (int .Values.topics.partitions) 1 }}
{{- fail "topics.partitions must be at least 1" }}
{{- end }}
{{- range $name, $stage := .Values.stages }}
{{- if not (has $name $known) }}
{{- fail (printf "stages.%s: unknown stage; the stages are %s" $name (join ", " $known)) }}
{{- end }}
{{- $as := $stage.autoscaling | default dict }}
{{- if eq $name "tier" }}
{{- if or (ne (int (default 1 $stage.replicas)) 1) $as.enabled }}
{{- fail "stages.tier: the tier stage runs as one copy (replicas: 1, no autoscaling): two would only make one defer its moves" }}
{{- end }}
{{- end }}
{{- if $as.enabled }}
{{- if not (has (default "lag" $as.type) (list "lag" "cpu")) }}
{{- fail (printf "stages.%s.autoscaling.type must be lag or cpu, not %q" $name $as.type) }}
{{- end }}
{{- $max := int (include "kusanagi.maxReplicas" (dict "root" $ "name" $name "stage" $stage)) }}
{{- if lt $max (int (default 1 $as.minReplicas)) }}
{{- fail (printf "stages.%s.autoscaling: maxReplicas (%d) is below minReplicas (%d)" $name $max (int (default 1 $as.minReplicas))) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* An HPA's maxReplicas: the stage's, else topics.partitions for a lag HPA (partitions bound the copies that work). */}}
{{- define "kusanagi.maxReplicas" -}}
{{- $as := .stage.autoscaling | default dict }}
{{- if $as.maxReplicas }}
{{- int $as.maxReplicas }}
{{- else if eq (default "lag" $as.type) "lag" }}
{{- int .root.Values.topics.partitions }}
{{- else }}
{{- fail (printf "stages.%s.autoscaling.maxReplicas is required for a cpu HPA" .name) }}
{{- end }}
{{- end }}
