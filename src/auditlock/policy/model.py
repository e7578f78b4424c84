"""The AuditPolicy custom resource as pydantic models: the single source of truth.

The CRD in `crds/` is generated from these classes (`auditlock crds`), so every field's
description here is what `kubectl explain auditpolicy.spec...` shows. Field names are
camelCase on the wire (Kubernetes convention) and snake_case in Python. The sections of
the spec are named `...Spec` (`DestinationSpec`, `ForwardSourceSpec`): the stores
(`sinks.S3Destination`) and the collector's config (`sidecar.config.ForwardSource`) are
other things, reached through one mapping (operator/sidecar_config.py).

Rules a structural CRD schema can express (types, enums, minimums, "exactly one
destination" via min/maxProperties) live in the schema; everything else is checked by
`AuditPolicySpec.model_validate` in the operator and reported in the policy's status.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from auditlock.ledger.vocabulary import CATEGORIES, Category
from auditlock.policy import paths

GROUP = "auditlock.io"
VERSION = "v1alpha1"
KIND = "AuditPolicy"
PLURAL = "auditpolicies"
SINGULAR = "auditpolicy"
SHORT_NAMES = ("ap", "auditpol")
API_VERSION = f"{GROUP}/{VERSION}"


# Kubernetes resource quantity, e.g. "100m", "64Mi", "1". Checked loosely here; the API
# server checks the container's resources strictly when the injected pod is created.
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class LabelSelectorRequirement(_Model):
    """One `matchExpressions` entry, as in Kubernetes' LabelSelector."""

    key: str = Field(description="The label key the requirement applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values: In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(
        default_factory=list,
        description="Label values; required for In and NotIn, empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class PodSelector(_Model):
    """Which pods in the policy's namespace are audited (a Kubernetes LabelSelector)."""

    match_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Pods whose labels include all of these key/value pairs are selected. "
        "An empty selector selects every pod in the namespace.",
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list,
        description="Set-based label requirements; all must hold for a pod to be selected.",
    )


class ForwardSourceSpec(_Model):
    """The Fluentd Forward intake on the pod's loopback (fluent-logger, Fluent Bit)."""

    enabled: bool = Field(default=True, description="Accept Forward protocol events.")
    port: int = Field(
        default=24224, ge=1, le=65535, description="Loopback TCP port the collector listens on."
    )


class HttpSourceSpec(_Model):
    """JSON over HTTP intake on the pod's loopback (POST /v1/events)."""

    enabled: bool = Field(default=True, description="Accept JSON events over HTTP.")
    port: int = Field(
        default=8686, ge=1, le=65535, description="Loopback TCP port of the HTTP intake."
    )


class ConfigFilesSourceSpec(_Model):
    """Records changes to mounted configuration files as configuration events."""

    paths: list[str] = Field(
        default_factory=list,
        description="Absolute paths (files or directories, e.g. ConfigMap or Secret mounts) "
        "whose changes are recorded as content hashes, never contents.",
    )


class AccessProxySourceSpec(_Model):
    """An HTTP reverse proxy in front of the app that records access events."""

    enabled: bool = Field(default=False, description="Run the access proxy in the collector.")
    listen_port: int = Field(
        default=8687, ge=1, le=65535, description="Port the proxy listens on for clients."
    )
    target_port: int = Field(
        default=8080, ge=1, le=65535, description="The application's port on loopback."
    )


class ClusterSourceSpec(_Model):
    """Cluster-level capture done by the operator for the policy's namespace."""

    audit_webhook: bool = Field(
        default=True,
        description="Record the API server's audit events for this namespace (exec, attach, "
        "port-forward, Secret reads, Role and RoleBinding changes, ConfigMap changes).",
    )
    watch: bool = Field(
        default=False,
        description="Watch ConfigMaps, Secrets (metadata and hashes only), Roles and "
        "RoleBindings instead, for clusters whose API server audit cannot be configured.",
    )


class SourcesSpec(_Model):
    """Where audit events come from."""

    forward: ForwardSourceSpec = Field(
        default_factory=ForwardSourceSpec, description="Fluentd Forward intake on loopback."
    )
    http: HttpSourceSpec = Field(default_factory=HttpSourceSpec, description="JSON/HTTP intake.")
    config_files: ConfigFilesSourceSpec = Field(
        default_factory=ConfigFilesSourceSpec, description="Mounted configuration file watcher."
    )
    access_proxy: AccessProxySourceSpec = Field(
        default_factory=AccessProxySourceSpec, description="HTTP access-logging reverse proxy."
    )
    cluster: ClusterSourceSpec = Field(
        default_factory=ClusterSourceSpec, description="Operator-side cluster-level capture."
    )


# Field paths are checked twice with the same words (policy/paths.py): by CEL in the CRD,
# so `kubectl apply` refuses a bad one, and here, for API servers without CEL.
_PathText = Annotated[str, Field(min_length=1, max_length=paths.MAX_PATH_LENGTH)]
FieldPath = Annotated[
    _PathText,
    AfterValidator(paths.check_path),
    Field(
        description="Dotted path of an event field (e.g. actor.name, target.resource) or "
        "a path under details, where the fields an app sends beyond the event schema are "
        f"stored (e.g. {paths.EXAMPLE}).",
        json_schema_extra={"x-kubernetes-validations": paths.cel_path_rules()},
    ),
]
RedactionPath = Annotated[
    _PathText,
    AfterValidator(paths.check_redaction_path),
    Field(json_schema_extra={"x-kubernetes-validations": paths.cel_redaction_rules()}),
]


class FieldMatch(_Model):
    """A test on one event field: its text equals one of `values`."""

    field: FieldPath
    values: list[str] = Field(
        min_length=1, description="The field matches when its text equals one of these."
    )


class Filters(_Model):
    """Which events are kept. Exclusions win over inclusions."""

    include: list[FieldMatch] = Field(
        default_factory=list,
        max_length=paths.MAX_PATHS,
        description="When non-empty, only events matching at least one entry are kept.",
    )
    exclude: list[FieldMatch] = Field(
        default_factory=list,
        max_length=paths.MAX_PATHS,
        description="Events matching any entry are dropped.",
    )


class Redaction(_Model):
    """What is removed from events before they are hashed and stored."""

    fields: list[RedactionPath] = Field(
        default_factory=list,
        max_length=paths.MAX_PATHS,
        description="Dotted event field paths whose values are replaced by [REDACTED] "
        "before the event is hashed and stored: actor.name, target.*, correlation.* or a "
        f"path under details, where an app's own fields are stored (e.g. {paths.EXAMPLE}).",
    )


class SecretRef(_Model):
    """A Secret in the policy's namespace."""

    name: str = Field(pattern=_DNS_LABEL, max_length=253, description="The Secret's name.")


class GCSDestinationSpec(_Model):
    """A Google Cloud Storage bucket with object retention or a locked retention policy."""

    bucket: str = Field(min_length=3, max_length=222, description="Bucket name.")
    prefix: str = Field(default="", description="Object name prefix inside the bucket.")
    endpoint: str | None = Field(
        default=None, description="API endpoint override (for emulators); normally unset."
    )
    credentials_secret: SecretRef | None = Field(
        default=None,
        description="Secret with a service-account JSON key under `key.json`; unset means "
        "workload identity.",
    )


class S3DestinationSpec(_Model):
    """An S3 bucket with Object Lock enabled."""

    bucket: str = Field(min_length=3, max_length=63, description="Bucket name.")
    prefix: str = Field(default="", description="Object key prefix inside the bucket.")
    region: str | None = Field(default=None, description="Bucket region, e.g. eu-west-1.")
    endpoint: str | None = Field(
        default=None, description="S3 endpoint URL for S3-compatible stores; unset for AWS."
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="How requests name the bucket: `path` (endpoint/bucket/key, for "
        "S3-compatible stores reached by a Service name), `virtual` (bucket.endpoint/key), "
        "or `auto`, the S3 client's own choice.",
    )
    credentials_secret: SecretRef | None = Field(
        default=None,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; unset means "
        "the pod's ambient AWS identity.",
    )


class FileDestinationSpec(_Model):
    """A local directory: for development and demos only, it is not WORM storage."""

    path: str = Field(pattern=r"^/", description="Absolute directory path (inside the collector).")


class DestinationSpec(_Model):
    """Where the ledger is stored. Exactly one of gcs, s3 or file must be set."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    gcs: GCSDestinationSpec | None = Field(default=None, description="Google Cloud Storage.")
    s3: S3DestinationSpec | None = Field(default=None, description="S3 with Object Lock.")
    file: FileDestinationSpec | None = Field(
        default=None, description="Local directory (not WORM; development only)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DestinationSpec:
        chosen = [n for n in ("gcs", "s3", "file") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"exactly one of gcs, s3 or file must be set, got {len(chosen)}"
                + (f" ({', '.join(chosen)})" if chosen else "")
            )
        return self

    @property
    def url(self) -> str:
        """The destination as a URL, the form `auditlock.sinks.open` and `verify` take."""
        if self.gcs is not None:
            return _join_url("gs", self.gcs.bucket, self.gcs.prefix)
        if self.s3 is not None:
            return _join_url("s3", self.s3.bucket, self.s3.prefix)
        assert self.file is not None
        return "file://" + self.file.path


def _join_url(scheme: str, bucket: str, prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"


class Retention(_Model):
    """How long every stored object is locked against deletion and change."""

    days: int = Field(ge=1, le=36500, description="Retention period in days (positive).")
    mode: Literal["Locked", "Unlocked"] = Field(
        default="Locked",
        description="Locked cannot be shortened by anyone (S3 COMPLIANCE, GCS Locked); "
        "Unlocked can be lifted by a privileged identity (S3 GOVERNANCE, GCS Unlocked).",
    )
    legal_hold: bool = Field(
        default=False,
        description="Also place a legal hold (S3) or temporary hold (GCS) on every object: "
        "each segment and checkpoint the collectors write and the published public key. "
        "A held object cannot be deleted, whatever its retention date, until the hold is "
        "lifted by hand.",
    )


# The smallest spool emptyDir whose rendered spool still holds an 8 MiB Forward message
# or HTTP request (operator/sidecar_config.py: spool_sizes).
MIN_SPOOL_LIMIT_MIB = 16


class Delivery(_Model):
    """Batching and buffering between intake and storage."""

    batch_size: int = Field(
        default=1000, ge=1, le=100000, description="Events per stored segment at most."
    )
    max_delay_ms: int = Field(
        default=1000,
        ge=10,
        le=600000,
        description="A segment is cut at the latest this many milliseconds after its first event.",
    )
    spool_limit_mib: int = Field(
        default=256,
        ge=MIN_SPOOL_LIMIT_MIB,
        le=65536,
        alias="spoolLimitMiB",
        description="Size of the collector's on-disk spool in MiB; intake pushes back when "
        f"it is full. Also the size limit of the spool emptyDir. At least "
        f"{MIN_SPOOL_LIMIT_MIB}: the spool must hold the largest Forward message or HTTP "
        "request (8 MiB) with room for its files.",
    )


class ResourceList(_Model):
    """CPU and memory quantities."""

    cpu: str | None = Field(default=None, pattern=_QUANTITY, description="CPU, e.g. 100m.")
    memory: str | None = Field(default=None, pattern=_QUANTITY, description="Memory, e.g. 64Mi.")


class Resources(_Model):
    """Compute resources of the collector container."""

    requests: ResourceList = Field(
        default_factory=lambda: ResourceList(cpu="50m", memory="64Mi"),
        description="Requested resources (default 50m CPU, 64Mi memory).",
    )
    limits: ResourceList = Field(
        default_factory=lambda: ResourceList(memory="128Mi"),
        description="Resource limits (default 128Mi memory, no CPU limit).",
    )


class SidecarSpec(_Model):
    """How the collector sidecar is run in selected pods."""

    image: str | None = Field(
        default=None, description="Collector image; unset uses the operator's default image."
    )
    resources: Resources = Field(
        default_factory=Resources, description="The collector container's resources."
    )


class AuditPolicySpec(_Model):
    """What is audited in this namespace, and where the tamper-evident trail is stored."""

    selector: PodSelector = Field(
        default_factory=PodSelector,
        description="Pods in this namespace that get the collector sidecar.",
    )
    sources: SourcesSpec = Field(default_factory=SourcesSpec, description="Where events come from.")
    categories: list[Category] = Field(
        default_factory=lambda: list(CATEGORIES),
        description="SOC 2 event categories kept: access, authorization, data, "
        "configuration, alert. Others are dropped.",
    )
    filters: Filters = Field(default_factory=Filters, description="Event include/exclude.")
    redaction: Redaction = Field(
        default_factory=Redaction, description="Values removed before events are stored."
    )
    destination: DestinationSpec = Field(
        description="WORM object storage for the ledger; exactly one of gcs, s3, file."
    )
    retention: Retention = Field(description="Retention period and lock mode of every object.")
    delivery: Delivery = Field(default_factory=Delivery, description="Batching and spooling.")
    enforcement: Literal["optional", "required"] = Field(
        default="optional",
        description="required: selected pods may not start without the collector (the "
        "opt-out annotation is ignored and a pod without it is refused); optional: the "
        "opt-out annotation is honoured and injection fails open.",
    )
    sidecar: SidecarSpec = Field(
        default_factory=SidecarSpec, description="The collector sidecar's image and resources."
    )
    signing: Literal["shared", "perPod"] = Field(
        default="perPod",
        description="perPod (the default): each collector generates its own key in memory "
        "at start and has the operator certify it with its root key (chart value "
        "certificates.rootKeySecret), so this namespace holds no private key; verify with "
        "the root's public key. shared (weaker, opt-in): every collector signs with the "
        "policy's one key, kept in a Secret in this namespace, so whoever can read Secrets "
        "here can sign checkpoints for every stream of the policy (docs/threat-model.md).",
    )

    @field_validator("categories")
    @classmethod
    def _categories_unique(cls, values: list[Category]) -> list[Category]:
        if not values:
            raise ValueError("at least one category is needed")
        if len(set(values)) != len(values):
            raise ValueError("categories must not repeat")
        return values


class Condition(_Model):
    """A Kubernetes-style status condition."""

    type: str = Field(
        description="Ready, DestinationLocked, Injecting, CollectorIsolated or AllPodsAudited."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason, machine readable.")
    message: str = Field(description="One sentence for humans.")
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, description="The spec generation this condition was computed from."
    )


class TrailVerification(_Model):
    """The newest run of continuous verification (`auditlock verify-policies`, the
    chart's optional CronJob): the policy's destination verified with its public key."""

    result: Literal["PASS", "FAIL", "ERROR"] = Field(
        description="PASS: every object verified; FAIL: verify found problems; ERROR: no "
        "verdict (destination unreachable, no public key yet, invalid spec)."
    )
    time: str = Field(
        description="When this run finished (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    reason: str = Field(
        description="CamelCase: TrailIntact, the first finding's code (e.g. "
        "CheckpointMissing) or why there is no verdict (DestinationUnreachable, NoPublicKey, "
        "InvalidSpec, VerifierFailed)."
    )
    message: str = Field(description="The first finding, or a summary of the verified trail.")
    findings: int = Field(default=0, description="Number of findings (problems).")
    warnings: int = Field(default=0, description="Number of warnings.")
    events_verified: int = Field(default=0, description="Events verified.")
    checkpoints_verified: int = Field(default=0, description="Signed checkpoints verified.")
    streams: int = Field(default=0, description="Streams found under the destination.")


class AuditPolicyStatus(_Model):
    """What the operator observed. Written by the operator, except `verification` and
    `lastVerified` (and the TrailVerified condition derived from them), which the
    continuous verification job writes."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation the status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, DestinationLocked, Injecting, CollectorIsolated, AllPodsAudited "
        "and, with continuous verification, TrailVerified.",
    )
    destination: str | None = Field(default=None, description="The destination as a URL.")
    retention: str | None = Field(
        default=None, description="Retention in short form, e.g. 365d Locked."
    )
    pods_selected: int | None = Field(
        default=None,
        description="Running pods in the namespace that the selector matches, with or "
        "without a collector.",
    )
    pods_injected: int | None = Field(
        default=None, description="Pods in the namespace that carry this policy's collector."
    )
    pods_unaudited: int | None = Field(
        default=None,
        description="Selected pods that run without any collector (opted out, created "
        "before the policy, or admitted while injection failed): their events are not "
        "recorded. The AllPodsAudited condition names a few.",
    )
    pods_stale: int | None = Field(
        default=None,
        description="Injected pods whose collector runs an older configuration than the "
        "current one (they pick it up when re-created).",
    )
    last_checkpoint: str | None = Field(
        default=None,
        description="Time of the newest signed checkpoint found in the destination.",
        json_schema_extra={"format": "date-time"},
    )
    key_fingerprint: str | None = Field(
        default=None,
        description="Key id of the policy's Ed25519 signing key: SHA-256 of the raw public "
        "key, hex.",
    )
    public_key: str | None = Field(
        default=None,
        description="The policy's Ed25519 public key (PEM SubjectPublicKeyInfo): what an "
        "auditor passes to `auditlock verify --public-key`. Also stored beside the data.",
    )
    key_secret: str | None = Field(
        default=None, description="Name of the Secret holding the signing key."
    )
    config_map: str | None = Field(
        default=None, description="Name of the ConfigMap with the collector configuration."
    )
    config_hash: str | None = Field(
        default=None, description="Hash of the current collector configuration."
    )
    last_verified: str | None = Field(
        default=None,
        description="When continuous verification last reached a verdict (PASS or FAIL) on "
        "the destination.",
        json_schema_extra={"format": "date-time"},
    )
    verification: TrailVerification | None = Field(
        default=None, description="The newest continuous verification run."
    )


def parse_spec(spec: dict[str, Any]) -> AuditPolicySpec:
    """Validate a spec as it comes from the API (camelCase keys)."""
    return AuditPolicySpec.model_validate(spec)
