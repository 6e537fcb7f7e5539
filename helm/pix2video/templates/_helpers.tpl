{{/* Names ------------------------------------------------------------------- */}}

{{- define "pix2video.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name, kept short enough that "<fullname>-inversion" and the editor's
pod names (<fullname>-editor-N) stay valid DNS labels. */}}
{{- define "pix2video.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>"; call with (list $ "depth"). */}}
{{- define "pix2video.componentName" -}}
{{- printf "%s-%s" (include "pix2video.fullname" (index . 0)) (index . 1) -}}
{{- end -}}

{{- define "pix2video.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pix2video.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pix2video.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels; call with (list $ "depth"). */}}
{{- define "pix2video.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "pix2video.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "pix2video.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "pix2video.chart" $root }}
{{ include "pix2video.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: pix2video
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Values ------------------------------------------------------------------ */}}

{{/* A value as the services parse it: whole numbers without an exponent (YAML
numbers reach templates as float64, and 2147483648 would print as 2.147483648e+09),
booleans as true/false, the rest as text. */}}
{{- define "pix2video.envValue" -}}
{{- if kindIs "float64" . -}}
{{- if eq . (floor .) -}}{{- printf "%d" (int64 .) -}}{{- else -}}{{- printf "%v" . -}}{{- end -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* Image of a service; call with (list $ "depth"). One image (pix2video) holds
the four services unless the service names its own repository. */}}
{{- define "pix2video.image" -}}
{{- $root := index . 0 -}}
{{- $svc := index $root.Values (index . 1) -}}
{{- $repo := $svc.image.repository -}}
{{- if not $repo -}}
{{- $repo = "pix2video" -}}
{{- with $root.Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- end -}}
{{- printf "%s:%s" $repo (default (default $root.Chart.AppVersion $root.Values.image.tag) $svc.image.tag) -}}
{{- end -}}

{{/* The object store the services use: the bundled MinIO or store.*. */}}
{{- define "pix2video.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s:%d" (include "pix2video.componentName" (list . "minio")) (int .Values.minio.port) -}}
{{- else -}}
{{- .Values.store.endpoint -}}
{{- end -}}
{{- end -}}

{{- define "pix2video.s3Secure" -}}
{{- if .Values.minio.enabled }}false{{ else }}{{ ternary "true" "false" .Values.store.secure }}{{ end -}}
{{- end -}}

{{- define "pix2video.s3SecretName" -}}
{{- default (include "pix2video.componentName" (list . "s3")) .Values.store.credentials.existingSecret -}}
{{- end -}}

{{- define "pix2video.tlsSecretName" -}}
{{- default (include "pix2video.componentName" (list . "tls")) .Values.ingress.tls.secretName -}}
{{- end -}}

{{/* host:port of a service inside the cluster; call with (list $ "depth"). */}}
{{- define "pix2video.address" -}}
{{- $root := index . 0 -}}
{{- printf "%s:%d" (include "pix2video.componentName" .) (int (index $root.Values (index . 1)).port) -}}
{{- end -}}

{{- define "pix2video.editorHeadless" -}}
{{- printf "%s-headless" (include "pix2video.componentName" (list . "editor")) -}}
{{- end -}}

{{/* Whole seconds a pod gets between SIGTERM... and SIGKILL: the preStop sleep,
the server's drain (graceSeconds) and a margin. Call with (list $ "depth"). */}}
{{- define "pix2video.terminationGrace" -}}
{{- $svc := index (index . 0).Values (index . 1) -}}
{{- $grace := 30.0 -}}{{/* ServerSettings.grace_seconds */}}
{{- if hasKey $svc.settings "graceSeconds" }}{{ $grace = $svc.settings.graceSeconds }}{{ end -}}
{{- add (int64 (ceil $grace)) (int64 $svc.preStopSleepSeconds) (int64 $svc.terminationGraceExtraSeconds) -}}
{{- end -}}

{{/* The ConfigMap data of a service: every PIX2VIDEO_* setting it reads, plus the
runtime's cache locations. Call with (list $ "depth"). */}}
{{- define "pix2video.configData" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $svc := index $root.Values $name -}}
{{- $data := dict -}}
{{- $_ := set $data "PIX2VIDEO_HOST" $root.Values.network.listenHost -}}
{{- $_ := set $data "PIX2VIDEO_PORT" (include "pix2video.envValue" $svc.port) -}}
{{- $_ := set $data "PIX2VIDEO_METRICS_PORT" (ternary (include "pix2video.envValue" $svc.metricsPort) "-1" $root.Values.metrics.enabled) -}}
{{- $_ := set $data "PIX2VIDEO_LOG_FORMAT" $root.Values.logging.format -}}
{{- $_ := set $data "PIX2VIDEO_TRACING" $root.Values.tracing.mode -}}
{{- if ne $root.Values.tracing.mode "off" -}}
{{- $_ := set $data "PIX2VIDEO_OTLP_ENDPOINT" $root.Values.tracing.otlpEndpoint -}}
{{- $_ := set $data "PIX2VIDEO_TRACE_SAMPLE_RATIO" (include "pix2video.envValue" $root.Values.tracing.sampleRatio) -}}
{{- end -}}
{{- $_ := set $data "PIX2VIDEO_MODEL" $root.Values.models.model -}}
{{- if and (eq $name "caption") $root.Values.models.captionModel -}}
{{- $_ := set $data "PIX2VIDEO_CAPTION_MODEL" $root.Values.models.captionModel -}}
{{- end -}}
{{- $_ := set $data "PIX2VIDEO_HOME" (printf "%s/pix2video" (trimSuffix "/" $root.Values.models.mountPath)) -}}
{{- range $key, $value := $svc.settings -}}
{{- $_ := set $data (printf "PIX2VIDEO_%s" (snakecase $key | upper)) (include "pix2video.envValue" $value) -}}
{{- end -}}
{{- if has $name (list "inversion" "editor") -}}
{{- $_ := set $data "PIX2VIDEO_STORE" "s3" -}}
{{- $_ := set $data "PIX2VIDEO_S3_ENDPOINT" (include "pix2video.s3Endpoint" $root) -}}
{{- $_ := set $data "PIX2VIDEO_S3_BUCKET" $root.Values.store.bucket -}}
{{- $_ := set $data "PIX2VIDEO_S3_SECURE" (include "pix2video.s3Secure" $root) -}}
{{- $_ := set $data "PIX2VIDEO_S3_REGION" $root.Values.store.region -}}
{{- $_ := set $data "PIX2VIDEO_S3_PREFIX" $root.Values.store.prefix -}}
{{- end -}}
{{- if and (eq $name "editor") (gt (include "pix2video.gpuCount" . | int) 1) -}}
{{- /* Step-parallel editing over the pod's GPUs, numbered from 0 inside the container. */ -}}
{{- $_ := set $data "PIX2VIDEO_DEVICES" (include "pix2video.gpuCount" . ) -}}
{{- end -}}
{{- if eq $name "inversion" -}}
{{- $_ := set $data "PIX2VIDEO_DEPTH_ADDRESS" (default (include "pix2video.address" (list $root "depth")) $svc.depthAddress) -}}
{{- $_ := set $data "PIX2VIDEO_CAPTION_ADDRESS" (default (include "pix2video.address" (list $root "caption")) $svc.captionAddress) -}}
{{- end -}}
{{- $sec := $root.Values.security -}}
{{- if $sec.tls.enabled -}}
{{- $_ := set $data "PIX2VIDEO_TLS_CERT_FILE" "/etc/pix2video/tls/tls.crt" -}}
{{- $_ := set $data "PIX2VIDEO_TLS_KEY_FILE" "/etc/pix2video/tls/tls.key" -}}
{{- $_ := set $data "PIX2VIDEO_HEALTH_PORT" (include "pix2video.envValue" $sec.tls.healthPort) -}}
{{- if $sec.tls.mutual -}}
{{- $_ := set $data "PIX2VIDEO_TLS_CLIENT_CA_FILE" "/etc/pix2video/tls/ca.crt" -}}
{{- if $sec.tls.tenantFromClientCert -}}
{{- $_ := set $data "PIX2VIDEO_TENANT_FROM_CLIENT_CERT" "true" -}}
{{- end -}}
{{- end -}}
{{- if eq $name "inversion" -}}
{{- $_ := set $data "PIX2VIDEO_UPSTREAM_TLS_CA_FILE" "/etc/pix2video/tls/ca.crt" -}}
{{- if $sec.tls.mutual -}}
{{- $_ := set $data "PIX2VIDEO_UPSTREAM_TLS_CERT_FILE" "/etc/pix2video/tls/tls.crt" -}}
{{- $_ := set $data "PIX2VIDEO_UPSTREAM_TLS_KEY_FILE" "/etc/pix2video/tls/tls.key" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $sec.tokens.enabled -}}
{{- $_ := set $data "PIX2VIDEO_AUTH_TOKENS_FILE" (printf "/etc/pix2video/tokens/%s" $sec.tokens.key) -}}
{{- if and (eq $name "inversion") $sec.tokens.serviceTokenSecret -}}
{{- $_ := set $data "PIX2VIDEO_UPSTREAM_TOKEN_FILE" (printf "/etc/pix2video/service-token/%s" $sec.tokens.serviceTokenKey) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $data "HF_HOME" (printf "%s/huggingface" (trimSuffix "/" $root.Values.models.mountPath)) -}}
{{- if $root.Values.models.offline -}}
{{- $_ := set $data "HF_HUB_OFFLINE" "1" -}}
{{- end -}}
{{- $_ := set $data "HOME" "/tmp" -}}
{{- $_ := set $data "XDG_CACHE_HOME" "/tmp/.cache" -}}
{{- if and (not $root.Values.minio.enabled) $root.Values.store.caBundle.existingSecret (has $name (list "inversion" "editor")) -}}
{{- $_ := set $data "SSL_CERT_FILE" (printf "/etc/pix2video/s3-ca/%s" $root.Values.store.caBundle.key) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/* Workloads ----------------------------------------------------------------- */}}

{{/* GPUs per pod of a service: the editor's editor.gpusPerReplica when set, else
<service>.gpu.count. Call with (list $ "editor"). */}}
{{- define "pix2video.gpuCount" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $svc := index $root.Values $name -}}
{{- if and (eq $name "editor") (not (kindIs "invalid" $svc.gpusPerReplica)) -}}
{{- int $svc.gpusPerReplica -}}
{{- else -}}
{{- int $svc.gpu.count -}}
{{- end -}}
{{- end -}}

{{/* The pod template of a service; call with (list $ "depth"). */}}
{{- define "pix2video.podTemplate" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $svc := index $root.Values $name -}}
{{- $pool := $root.Values.gpuNodePool -}}
{{- $gpuCount := include "pix2video.gpuCount" . | int -}}
{{- $gpu := gt $gpuCount 0 -}}
{{- $nodeSelector := $svc.nodeSelector -}}
{{- $tolerations := $svc.tolerations -}}
{{- $runtimeClass := $svc.runtimeClassName -}}
{{- if $gpu -}}
{{- $nodeSelector = default $pool.nodeSelector $svc.nodeSelector -}}
{{- $tolerations = default $pool.tolerations $svc.tolerations -}}
{{- $runtimeClass = default $pool.runtimeClassName $svc.runtimeClassName -}}
{{- end -}}
{{- $store := has $name (list "inversion" "editor") -}}
{{- $sec := $root.Values.security -}}
{{- /* The kubelet's gRPC probes speak plaintext: under TLS they use the health-only port. */ -}}
{{- $probePort := ternary $sec.tls.healthPort $svc.port $sec.tls.enabled -}}
{{- $serviceToken := and $sec.tokens.enabled $sec.tokens.serviceTokenSecret (eq $name "inversion") -}}
metadata:
  labels:
    {{- include "pix2video.labels" . | nindent 4 }}
    {{- with $svc.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "pix2video.configData" . | sha256sum }}
    {{- if and $store (not $root.Values.store.credentials.existingSecret) }}
    checksum/s3-secret: {{ printf "%s/%s" $root.Values.store.credentials.accessKey $root.Values.store.credentials.secretKey | sha256sum }}
    {{- end }}
    {{- with $svc.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "pix2video.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
  # No Docker-link variables: a Service named "pix2video" would otherwise set
  # PIX2VIDEO_PORT=tcp://... in every pod of the namespace, which the services
  # would read as their port setting.
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ include "pix2video.terminationGrace" . }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $svc.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $runtimeClass }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with $nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $svc.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $svc.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ $name }}
      image: {{ include "pix2video.image" . | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      # The image's entrypoint is the pix2video CLI; the command picks the service.
      args: [serve, {{ $name }}]
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      ports:
        - name: grpc
          containerPort: {{ $svc.port }}
          protocol: TCP
        {{- if $root.Values.metrics.enabled }}
        - name: metrics
          containerPort: {{ $svc.metricsPort }}
          protocol: TCP
        {{- end }}
        {{- if $sec.tls.enabled }}
        - name: health
          containerPort: {{ $sec.tls.healthPort }}
          protocol: TCP
        {{- end }}
      envFrom:
        - configMapRef:
            name: {{ include "pix2video.componentName" . }}
      {{- $extraEnv := concat $root.Values.extraEnv $svc.extraEnv }}
      {{- if or $store (eq $name "editor") $extraEnv }}
      env:
        {{- if $store }}
        - name: PIX2VIDEO_S3_ACCESS_KEY
          valueFrom:
            secretKeyRef:
              name: {{ include "pix2video.s3SecretName" $root }}
              key: {{ $root.Values.store.credentials.accessKeyKey }}
        - name: PIX2VIDEO_S3_SECRET_KEY
          valueFrom:
            secretKeyRef:
              name: {{ include "pix2video.s3SecretName" $root }}
              key: {{ $root.Values.store.credentials.secretKeyKey }}
        {{- end }}
        {{- if eq $name "editor" }}
        # Session ids start with the pod name: <pod>.<headless service> reaches
        # the replica that holds a session.
        - name: PIX2VIDEO_REPLICA_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- with $extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      startupProbe:
        grpc:
          port: {{ $probePort }}
          service: {{ include "pix2video.grpcService" $name }}
        {{- toYaml $svc.probes.startup | nindent 8 }}
      readinessProbe:
        grpc:
          port: {{ $probePort }}
          service: {{ include "pix2video.grpcService" $name }}
        {{- toYaml $svc.probes.readiness | nindent 8 }}
      livenessProbe:
        grpc:
          port: {{ $probePort }}
          service: {{ include "pix2video.grpcService" $name }}
        {{- toYaml $svc.probes.liveness | nindent 8 }}
      {{- if gt (int $svc.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ $svc.preStopSleepSeconds }}
      {{- end }}
      resources:
        {{- $resources := deepCopy (default dict $svc.resources) }}
        {{- if $gpu }}
        {{- $limits := default dict $resources.limits }}
        {{- $_ := set $limits $pool.resourceName $gpuCount }}
        {{- $_ := set $resources "limits" $limits }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: dshm
          mountPath: /dev/shm
        - name: models
          mountPath: {{ $root.Values.models.mountPath }}
          readOnly: {{ $root.Values.models.volume.readOnly }}
        {{- if and $store (not $root.Values.minio.enabled) $root.Values.store.caBundle.existingSecret }}
        - name: s3-ca
          mountPath: /etc/pix2video/s3-ca
          readOnly: true
        {{- end }}
        {{- if $sec.tls.enabled }}
        - name: tls
          mountPath: /etc/pix2video/tls
          readOnly: true
        {{- end }}
        {{- if $sec.tokens.enabled }}
        - name: tokens
          mountPath: /etc/pix2video/tokens
          readOnly: true
        {{- end }}
        {{- if $serviceToken }}
        - name: service-token
          mountPath: /etc/pix2video/service-token
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 4Gi
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: 2Gi
    - name: models
      {{- $vol := $root.Values.models.volume }}
      {{- if eq $vol.type "emptyDir" }}
      emptyDir:
        sizeLimit: {{ $vol.size }}
      {{- else if eq $vol.type "persistentVolumeClaim" }}
      persistentVolumeClaim:
        claimName: {{ include "pix2video.componentName" (list $root "models") }}
        readOnly: {{ $vol.readOnly }}
      {{- else }}
      persistentVolumeClaim:
        claimName: {{ $vol.existingClaim }}
        readOnly: {{ $vol.readOnly }}
      {{- end }}
    {{- if and $store (not $root.Values.minio.enabled) $root.Values.store.caBundle.existingSecret }}
    - name: s3-ca
      secret:
        secretName: {{ $root.Values.store.caBundle.existingSecret }}
        items:
          - key: {{ $root.Values.store.caBundle.key }}
            path: {{ $root.Values.store.caBundle.key }}
    {{- end }}
    {{- if $sec.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ $sec.tls.secretName }}
        defaultMode: 0440
    {{- end }}
    {{- if $sec.tokens.enabled }}
    - name: tokens
      secret:
        secretName: {{ $sec.tokens.existingSecret }}
        defaultMode: 0440
    {{- end }}
    {{- if $serviceToken }}
    - name: service-token
      secret:
        secretName: {{ $sec.tokens.serviceTokenSecret }}
        defaultMode: 0440
    {{- end }}
{{- end -}}

{{/* The gRPC service name that the health checks ask about. */}}
{{- define "pix2video.grpcService" -}}
{{- $names := dict "depth" "pix2video.depth.v1.DepthService" "caption" "pix2video.caption.v1.CaptionService" "inversion" "pix2video.inversion.v1.InversionService" "editor" "pix2video.editor.v1.EditorService" -}}
{{- index $names . -}}
{{- end -}}

{{/* A number as a Kubernetes quantity: 4 -> "4", 0.75 -> "750m". */}}
{{- define "pix2video.quantity" -}}
{{- $v := float64 . -}}
{{- if eq $v (floor $v) -}}{{- printf "%d" (int64 $v) -}}{{- else -}}{{- printf "%dm" (int64 (round (mulf $v 1000) 0)) -}}{{- end -}}
{{- end -}}
