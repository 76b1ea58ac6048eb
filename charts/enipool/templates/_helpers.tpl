{{/* Name of the chart, overridable. */}}
{{- define "enipool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: the release name, or "<release>-enipool" when it lacks "enipool". */}}
{{- define "enipool.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains "enipool" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-enipool" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "enipool.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "enipool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: enipool
{{- end -}}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "operator"). */}}
{{- define "enipool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "enipool.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "enipool.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "enipool.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "enipool.agentServiceAccount" -}}
{{- default (printf "%s-agent" (include "enipool.fullname" .)) .Values.agent.serviceAccount.name -}}
{{- end -}}

{{/* Image reference: include with (dict "ctx" $ "image" .Values.operator.image). */}}
{{- define "enipool.image" -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
{{- $repo := .image.repository -}}
{{- if .ctx.Values.image.registry -}}
{{- $repo = printf "%s/%s" .ctx.Values.image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The CNI network config list the agent writes on the host once it can serve. */}}
{{- define "enipool.conflist" -}}
{{- $mtu := ternary .Values.agent.podMTU .Values.agent.mtu (gt (int64 .Values.agent.podMTU) 0) -}}
{{- $plugins := list (dict "type" "enipool-cni" "agentSocket" .Values.agent.socket "mtu" (int64 $mtu) "delJournalDir" .Values.agent.delJournalDir) -}}
{{- if .Values.cni.portmap.enabled -}}
{{- $plugins = append $plugins (dict "type" "portmap" "capabilities" (dict "portMappings" true) "snat" true) -}}
{{- end -}}
{{- if .Values.cni.bandwidth.enabled -}}
{{- $plugins = append $plugins (dict "type" "bandwidth" "capabilities" (dict "bandwidth" true)) -}}
{{- end -}}
{{- dict "cniVersion" "1.0.0" "name" "enipool" "plugins" $plugins | toPrettyJson -}}
{{- end -}}
