{{/*
Names shared by every template. Kubernetes names are limited to 63 characters.
*/}}
{{- define "auditlock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "auditlock.fullname" -}}
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

{{/* Cluster-scoped objects (ClusterRole, webhook configurations) are not namespaced, so
their names carry the release namespace to let two releases coexist. */}}
{{- define "auditlock.clusterName" -}}
{{- printf "%s-%s" (include "auditlock.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The ConfigMap in which the operator publishes the cluster name it uses (--cluster-name
or derived from the kube-system namespace's UID), for the collector beside it. */}}
{{- define "auditlock.secretHashKey" -}}
{{- .Values.secretHashKey | default (printf "%s-secret-hash-key" (include "auditlock.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{- define "auditlock.clusterIdentityConfigMap" -}}
{{- printf "%s-cluster" (include "auditlock.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "auditlock.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "auditlock.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: auditlock
{{- end }}

{{- define "auditlock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "auditlock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "auditlock.serviceAccountName" -}}
{{- default (include "auditlock.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "auditlock.webhookServiceName" -}}
{{- printf "%s-webhook" (include "auditlock.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "auditlock.auditServiceName" -}}
{{- printf "%s-audit" (include "auditlock.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "auditlock.tlsSecretName" -}}
{{- printf "%s-webhook-tls" (include "auditlock.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "auditlock.peeringName" -}}
{{- default (include "auditlock.fullname" .) .Values.peering.name }}
{{- end }}

{{/* image reference: a digest wins over a tag; the tag defaults to the chart's appVersion. */}}
{{- define "auditlock.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The DNS names the webhook serving certificate must cover. */}}
{{- define "auditlock.tlsDNSNames" -}}
{{- $ns := .Release.Namespace }}
{{- $names := list }}
{{- range $svc := list (include "auditlock.webhookServiceName" .) (include "auditlock.auditServiceName" .) }}
{{- $names = concat $names (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* What the mutating and validating webhooks share. Called with a dict: root (the chart
context), path (the operator's URL path for this webhook), caBundle (base64, or empty
when cert-manager injects it), honourSkipLabel (whether webhook.skipLabel=skip pods are
left out) and matchLabels (namespace labels this webhook requires, besides
webhook.namespaceMatchLabels). */}}
{{- define "auditlock.webhookCommon" -}}
admissionReviewVersions: [v1]
sideEffects: None
matchPolicy: Equivalent
timeoutSeconds: {{ .root.Values.webhook.timeoutSeconds }}
clientConfig:
  service:
    name: {{ include "auditlock.webhookServiceName" .root }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- if .caBundle }}
  caBundle: {{ .caBundle }}
  {{- end }}
rules:
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE]
    resources: [pods]
    scope: Namespaced
  # `kubectl debug` adds ephemeral containers to a running pod: checked too, so none
  # mounts the collector's key or spool or targets the collector's processes.
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [UPDATE]
    resources: [pods/ephemeralcontainers]
    scope: Namespaced
{{- if .root.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" }}
  # Kubernetes >= 1.30 (matchConditions): Pod UPDATEs that change a container image, so
  # `kubectl set image pod/p auditlock-collector=...` cannot swap the collector out.
  # Other pod updates (labels, annotations) never reach the webhooks.
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [UPDATE]
    resources: [pods]
    scope: Namespaced
matchConditions:
  # Keep equal to auditlock.operator.webhook_config.IMAGE_CHANGE_CONDITION.
  - name: create-debug-or-image-change
    expression: >-
      request.operation != 'UPDATE' || (has(request.subResource) && request.subResource != '') || object.spec.containers.map(c, c.image) != oldObject.spec.containers.map(c, c.image) || (has(object.spec.initContainers) && object.spec.initContainers.map(c, c.image) != oldObject.spec.initContainers.map(c, c.image))
{{- end }}
namespaceSelector:
  {{- $labels := merge (dict) (.matchLabels | default dict) .root.Values.webhook.namespaceMatchLabels }}
  {{- with $labels }}
  matchLabels:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  matchExpressions:
    # Never intercept the control plane's own pods or the operator's (which would then
    # depend on itself to start).
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- toYaml (uniq (concat (list "kube-system" "kube-public" "kube-node-lease" .root.Release.Namespace) .root.Values.webhook.excludeNamespaces)) | nindent 8 }}
{{- if .honourSkipLabel }}
objectSelector:
  matchExpressions:
    - key: {{ .root.Values.webhook.skipLabel }}
      operator: NotIn
      values: [skip]
{{- else }}
# Every pod: a label any app team can set must not switch enforcement off.
objectSelector: {}
{{- end }}
{{- end }}

{{- define "auditlock.rootKeySecretName" -}}
{{- default (printf "%s-root-key" (include "auditlock.fullname" .)) .Values.certificates.rootKeySecret }}
{{- end }}

{{- define "auditlock.signingKeySecretName" -}}
{{- default (printf "%s-collector-key" (include "auditlock.fullname" .)) .Values.collector.signingKeySecret }}
{{- end }}
