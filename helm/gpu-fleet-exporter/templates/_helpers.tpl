{{/* Names and labels. */}}
{{- define "gfe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gfe.fullname" -}}
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

{{- define "gfe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gfe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gfe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gfe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: exporter
{{- end -}}

{{/* Labels of the Prometheus Operator objects: the chart's, plus the ones Prometheus selects by. */}}
{{- define "gfe.monitoringLabels" -}}
{{ include "gfe.labels" . }}
{{- with .Values.monitoring.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "gfe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gfe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gfe.image" -}}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion .Values.image.variant) .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "gfe.tokenSecretName" -}}
{{- default (printf "%s-tokens" (include "gfe.fullname" .)) .Values.tokens.existingSecret -}}
{{- end -}}

{{/*
The pod's runtime class: one per pod, so a cluster with both vendors' runtimes installs one
release per vendor (docs/deploy-kubernetes.md).
*/}}
{{- define "gfe.runtimeClassName" -}}
{{- $nv := and .Values.gpu.nvidia.enabled .Values.gpu.nvidia.runtimeClassName -}}
{{- $amd := and .Values.gpu.amd.enabled .Values.gpu.amd.runtimeClassName -}}
{{- if and $nv $amd -}}
{{- fail "gpu.nvidia.runtimeClassName and gpu.amd.runtimeClassName: a pod has one runtime class; install one release per vendor, or clear one of them" -}}
{{- end -}}
{{- if $nv -}}{{ .Values.gpu.nvidia.runtimeClassName }}{{- else if $amd -}}{{ .Values.gpu.amd.runtimeClassName }}{{- end -}}
{{- end -}}

{{/*
Node affinity: one term per GPU label of the enabled vendors (terms are ORed), each also
requiring that the exclusion label is absent (expressions in a term are ANDed).
*/}}
{{- define "gfe.affinity" -}}
{{- if .Values.affinity -}}
{{ toYaml .Values.affinity }}
{{- else -}}
{{- $terms := list -}}
{{- $exclude := list -}}
{{- if .Values.excludeNodeLabel -}}
{{- $exclude = list (dict "key" .Values.excludeNodeLabel "operator" "DoesNotExist") -}}
{{- end -}}
{{- if .Values.gpuNodeAffinity -}}
{{- range $vendor := list "nvidia" "amd" -}}
{{- $v := index $.Values.gpu $vendor -}}
{{- if $v.enabled -}}
{{- range $key, $value := $v.nodeLabels -}}
{{- $expr := dict "key" $key "operator" "Exists" -}}
{{- if $value -}}
{{- $expr = dict "key" $key "operator" "In" "values" (list $value) -}}
{{- end -}}
{{- $terms = append $terms (dict "matchExpressions" (prepend $exclude $expr)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $terms -}}
{{- fail "gpuNodeAffinity: enable gpu.nvidia or gpu.amd with at least one nodeLabels entry, or set gpuNodeAffinity: false" -}}
{{- end -}}
{{- else if $exclude -}}
{{- $terms = list (dict "matchExpressions" $exclude) -}}
{{- end -}}
{{- if $terms -}}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      {{- toYaml $terms | nindent 6 }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Target relabelings shared by the ServiceMonitor and the PodMonitor (DESIGN.md, metric contract):
node and instance from the node name, pool from a node label, and the exporter pod's own labels
dropped so that a rollout does not start every series anew.
*/}}
{{- define "gfe.relabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
  action: replace
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: instance
  action: replace
{{- with .Values.monitoring.poolNodeLabel }}
- sourceLabels: [{{ printf "__meta_kubernetes_node_label_%s" (regexReplaceAll "[^a-zA-Z0-9_]" . "_") }}]
  targetLabel: pool
  action: replace
{{- end }}
- regex: (pod|container|namespace|service|endpoint)
  action: labeldrop
{{- with .Values.monitoring.extraRelabelings }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "gfe.checkMonitors" -}}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled -}}
{{- fail "monitoring.serviceMonitor and monitoring.podMonitor: enable one, not both (each node would be scraped twice into the same series)" -}}
{{- end -}}
{{- if and .Values.monitoring.serviceMonitor.enabled (not .Values.service.enabled) -}}
{{- fail "monitoring.serviceMonitor needs service.enabled" -}}
{{- end -}}
{{- end -}}
