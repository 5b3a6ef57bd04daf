{{/* The chart's name. */}}
{{- define "keygate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the provider's resources are named after it. */}}
{{- define "keygate.fullname" -}}
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

{{- define "keygate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keygate.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString (.Values.image.tag | default .Chart.AppVersion)) }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "keygate.labels" -}}
helm.sh/chart: {{ include "keygate.chart" . }}
app.kubernetes.io/name: {{ include "keygate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ toString (.Values.image.tag | default .Chart.AppVersion) | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector of the provider's pods. */}}
{{- define "keygate.providerSelector" -}}
app.kubernetes.io/name: {{ include "keygate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: provider
{{- end }}

{{- define "keygate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keygate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The provider's Secret: the one given, or the one the chart creates. */}}
{{- define "keygate.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "keygate.fullname" .) }}
{{- end }}

{{/*
The issuer's path without its trailing slash: "" for https://id.example.com/, "/dex" for
https://example.com/dex/. Keygate serves every endpoint under it.
*/}}
{{- define "keygate.issuerBasePath" -}}
{{- trimSuffix "/" (urlParse (required "config.issuer is required" .Values.config.issuer)).path }}
{{- end }}

{{/* Name of an authenticator's resources. Call with (dict "root" $ "a" $authenticator). */}}
{{- define "keygate.authenticatorFullname" -}}
{{- printf "%s-authenticator-%s" (include "keygate.fullname" .root) (required "authenticators[].name is required" .a.name) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keygate.authenticatorSelector" -}}
app.kubernetes.io/name: {{ include "keygate.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: authenticator
keygate.io/authenticator: {{ .a.name }}
{{- end }}

{{/* An authenticator's Secret: its existingSecret, or the one the chart creates. */}}
{{- define "keygate.authenticatorSecretName" -}}
{{- .a.existingSecret | default (include "keygate.authenticatorFullname" .) }}
{{- end }}

{{/*
The DexAuthenticator document of an authenticator, identical in the provider's configuration
(keygate serve registers its client) and in the authenticator's own. The client secret is a file
of the Secret, mounted at the same path in both pods.
*/}}
{{- define "keygate.dexAuthenticator" -}}
apiVersion: deckhouse.io/v1
kind: DexAuthenticator
metadata:
  name: {{ .a.name }}
  namespace: {{ .a.namespace | default .root.Release.Namespace }}
  {{- with .a.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- toYaml (omit (required (printf "authenticators[%s].spec is required" .a.name) .a.spec) "secret" "secretFromEnv" "secretFile") | nindent 2 }}
  secretFile: /etc/keygate-secrets/authenticator-{{ .a.name }}-client-secret
{{- end }}

{{/*
The application domains of an authenticator, without ports, comma-separated: applicationDomain,
additionalApplications[].domain, applications[].domain. Read it with splitList ",".
*/}}
{{- define "keygate.authenticatorDomains" -}}
{{- $domains := list }}
{{- with .a.spec.applicationDomain }}
{{- $domains = append $domains (first (splitList ":" .)) }}
{{- end }}
{{- range .a.spec.additionalApplications }}
{{- $domains = append $domains (first (splitList ":" .domain)) }}
{{- end }}
{{- range .a.spec.applications }}
{{- $domains = append $domains (first (splitList ":" .domain)) }}
{{- end }}
{{- if not $domains }}
{{- fail (printf "authenticators[%s]: the spec names no domain (applicationDomain, additionalApplications or applications)" .a.name) }}
{{- end }}
{{- join "," (uniq $domains) }}
{{- end }}
