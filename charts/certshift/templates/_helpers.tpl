{{- define "certshift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "certshift.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "certshift.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "certshift.serviceAccountName" -}}
{{- default (include "certshift.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "certshift.labels" -}}
app.kubernetes.io/name: {{ include "certshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "certshift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "certshift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The operator's permissions: read its CRDs, write their status; read
Secrets and create or patch only its own (the operator refuses to write any
Secret it did not create: RBAC cannot name Secrets that do not exist yet);
patch workload members' pod templates (only the certshift.io/revision
annotation, under its own field manager); never delete anything; no wildcards. */}}
{{- define "certshift.rules" -}}
- apiGroups: [certshift.io]
  resources: [clustercertificatedeclarations, observedcertificates, certificatepolicies]
  verbs: [get, list, watch]
- apiGroups: [certshift.io]
  resources:
  - clustercertificatedeclarations/status
  - observedcertificates/status
  - certificatepolicies/status
  verbs: [get, patch, update]
- apiGroups: [certshift.io]
  resources:
  - clustercertificatedeclarations/finalizers
  - observedcertificates/finalizers
  - certificatepolicies/finalizers
  verbs: [update]
- apiGroups: [""]
  resources: [secrets, configmaps]
  # update: a renewed source replaces the store Secret's data as read
  # (optimistic concurrency), never anyone else's Secret.
  verbs: [get, list, watch, create, patch, update]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [get, list, watch, patch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
