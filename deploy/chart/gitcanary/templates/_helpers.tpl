{{/* The name of every object: the release name, or release-chart when it lacks the chart's name. */}}
{{- define "gitcanary.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels of every object; the same as deploy/manifests, so the two stay interchangeable. */}}
{{- define "gitcanary.labels" -}}
app.kubernetes.io/name: gitcanary
app.kubernetes.io/part-of: gitcanary
{{- end -}}
