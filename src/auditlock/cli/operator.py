"""`auditlock operator run|webhook-config`: run the operator, or print the webhook
configurations that point the API server at it (see docs/operator.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from auditlock.cli.main import EXIT_OK, EXIT_USAGE


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _env_list(name: str) -> list[str]:
    """A comma-separated variable as a list (empty items dropped)."""
    return [item for item in (os.environ.get(name) or "").split(",") if item]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the AuditPolicy operator (kopf + webhooks + cluster capture)",
        description="The auditlock operator. Every flag has an AUDITLOCK_* environment "
        "variable equivalent (docs/operator.md).",
    )
    sub = parser.add_subparsers(dest="operator_command", metavar="ACTION")
    run = sub.add_parser("run", help="run the operator until SIGTERM")
    run.add_argument("--kubeconfig", default=_env("KUBECONFIG"), help="default: in-cluster")
    run.add_argument(
        "--namespace",
        action="append",
        default=_env_list("AUDITLOCK_NAMESPACES"),
        help="serve only these namespaces (repeatable); default: all",
    )
    run.add_argument("--webhook-host", default=_env("AUDITLOCK_WEBHOOK_HOST", "0.0.0.0"))
    run.add_argument("--webhook-port", type=int, default=_env_int("AUDITLOCK_WEBHOOK_PORT", 9443))
    run.add_argument(
        "--tls-dir",
        type=Path,
        default=_path("AUDITLOCK_TLS_DIR"),
        help="directory with tls.crt and tls.key (a kubernetes.io/tls Secret mount)",
    )
    run.add_argument(
        "--audit-port",
        type=int,
        default=_env_int("AUDITLOCK_AUDIT_PORT", 0),
        help="also serve the webhooks and /audit on this TLS port (0: only --webhook-port)",
    )
    run.add_argument("--tls-cert-file", type=Path, default=_path("AUDITLOCK_TLS_CERT_FILE"))
    run.add_argument("--tls-key-file", type=Path, default=_path("AUDITLOCK_TLS_KEY_FILE"))
    run.add_argument(
        "--health-port",
        type=int,
        default=_env_int("AUDITLOCK_HEALTH_PORT", 8080),
        help="plain HTTP /healthz, /readyz, /metrics (0 disables)",
    )
    run.add_argument("--sidecar-image", default=_env("AUDITLOCK_SIDECAR_IMAGE"))
    run.add_argument(
        "--sidecar-mode",
        choices=["auto", "native", "classic"],
        default=_env("AUDITLOCK_SIDECAR_MODE", "auto"),
    )
    run.add_argument(
        "--cluster-name",
        default=_env("AUDITLOCK_CLUSTER_NAME", ""),
        help="a DNS label naming this cluster, part of every stream id; default: derived "
        "from the kube-system namespace's UID",
    )
    run.add_argument(
        "--cluster-identity-configmap",
        default=_env("AUDITLOCK_CLUSTER_IDENTITY_CONFIGMAP", ""),
        metavar="NAMESPACE/NAME",
        help="publish the cluster name in this ConfigMap (key clusterName) at start, for "
        "the collector beside the operator",
    )
    run.add_argument(
        "--secret-hash-key",
        default=_env("AUDITLOCK_SECRET_HASH_KEY", ""),
        metavar="NAMESPACE/NAME",
        help="Secret holding the key that Secret values are hashed under (HMAC-SHA256) in "
        "the trail; created with a random key when absent. Without it, Secret writes are "
        "recorded without hashes of their values",
    )
    run.add_argument(
        "--sidecar-pull-policy",
        choices=["Always", "IfNotPresent", "Never"],
        default=_env("AUDITLOCK_SIDECAR_PULL_POLICY", "IfNotPresent"),
    )
    run.add_argument(
        "--standalone",
        action="store_true",
        help="no kopf peering (one replica); the default unless --peering is given",
    )
    run.add_argument(
        "--priority",
        default=_env("AUDITLOCK_PRIORITY", "0"),
        help="kopf peering priority: an integer, or 'random' so that several replicas get "
        "different ones (kopf pauses every replica that sees a live peer of equal "
        "priority; the highest leads, the others take over when it is gone)",
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--peering",
        default=_env("AUDITLOCK_PEERING"),
        help="kopf peering name for several replicas (needs the KopfPeering CRD)",
    )
    run.add_argument(
        "--collector",
        default=_env("AUDITLOCK_COLLECTOR", "127.0.0.1:8686"),
        help="host:port of the HTTP intake of the operator's own collector; audit "
        "batches are answered 200 only once it has stored them",
    )
    run.add_argument(
        "--audit-token-file",
        type=Path,
        default=_path("AUDITLOCK_AUDIT_TOKEN_FILE"),
        help="bearer token the API server's audit webhook must present on /audit",
    )
    run.add_argument(
        "--root-key-file",
        type=Path,
        default=_path("AUDITLOCK_ROOT_KEY_FILE"),
        help="Ed25519 private key (PEM) that certifies collectors' per-pod keys on "
        "/v1/certificates (docs/operator.md, 'Per-pod keys'); unset: no certificates",
    )
    run.add_argument(
        "--certificate-validity-seconds",
        type=float,
        default=_env_float("AUDITLOCK_CERTIFICATE_VALIDITY_SECONDS", 86400),
        help="how long a per-pod key's certificate is valid; collectors renew at two thirds",
    )
    run.add_argument(
        "--certificate-url",
        default=_env("AUDITLOCK_CERTIFICATE_URL", ""),
        help="https URL of /v1/certificates as collectors reach it (the webhook Service)",
    )
    run.add_argument(
        "--certificate-ca-file",
        type=Path,
        default=_path("AUDITLOCK_CERTIFICATE_CA_FILE"),
        help="CA (PEM) of the operator's TLS certificate, handed to per-pod collectors",
    )
    run.add_argument(
        "--watch-fallback",
        action="store_true",
        default=_env("AUDITLOCK_WATCH_FALLBACK", "false") == "true",
        help="also watch ConfigMaps, Secrets, Roles, RoleBindings (for clusters without "
        "API server audit)",
    )
    run.add_argument(
        "--refresh-seconds",
        type=float,
        default=_env_float("AUDITLOCK_REFRESH_SECONDS", 60),
    )
    run.add_argument(
        "--checkpoint-scan-seconds",
        type=float,
        default=_env_float("AUDITLOCK_CHECKPOINT_SCAN_SECONDS", 300),
        help="how often the destination is listed for its newest checkpoint",
    )
    run.add_argument(
        "--abandon-grace-seconds",
        type=float,
        default=_env_float("AUDITLOCK_ABANDON_GRACE_SECONDS", 300),
        help="close the stream of a pod that is gone for good after this long (an "
        "'abandon' checkpoint, docs/operator.md); 0 never closes them",
    )
    witness = run.add_argument_group("the witness of every stream (docs/operator.md)")
    witness.add_argument(
        "--witness-key-secret",
        default=_env("AUDITLOCK_WITNESS_KEY_SECRET", ""),
        metavar="NAMESPACE/NAME",
        help="Secret holding the operator's Ed25519 key (ed25519.pem): every "
        "--witness-seconds a signed record of each stream's newest checkpoint is stored in "
        "every destination (FORMAT.md section 16). Empty: no witness",
    )
    witness.add_argument(
        "--witness-seconds",
        type=float,
        default=_env_float("AUDITLOCK_WITNESS_SECONDS", 60),
        help="how often the witness reads every destination and stores a record",
    )
    witness.add_argument(
        "--witness-tsa-url",
        default=_env("AUDITLOCK_WITNESS_TSA_URL") or None,
        metavar="URL",
        help="an RFC 3161 time-stamping authority: each witness record is timestamped and "
        "the token stored beside it; unset: no tokens",
    )
    alerts = run.add_argument_group("alerts (docs/alerts.md)")
    alerts.add_argument(
        "--alertmanager-url",
        default=_env("AUDITLOCK_ALERTMANAGER_URL"),
        help="base URL of Alertmanager (alerts go to URL/api/v2/alerts); unset: none",
    )
    alerts.add_argument(
        "--alert-webhook-url",
        default=_env("AUDITLOCK_ALERT_WEBHOOK_URL"),
        help="a webhook every alert is POSTed to, signed with HMAC-SHA256",
    )
    alerts.add_argument(
        "--alert-webhook-secret-file",
        type=Path,
        default=_path("AUDITLOCK_ALERT_WEBHOOK_SECRET_FILE"),
        help="file holding the webhook's signing secret (required with --alert-webhook-url)",
    )
    alerts.add_argument(
        "--disable-builtin-alert",
        action="append",
        default=_env_list("AUDITLOCK_DISABLED_BUILTIN_ALERTS"),
        metavar="NAME",
        help="turn off a built-in alert (repeatable; docs/alerts.md lists them)",
    )
    alerts.add_argument(
        "--operator-identity",
        action="append",
        default=_env_list("AUDITLOCK_OPERATOR_IDENTITY"),
        metavar="USER",
        help="the operator's own API identity (its AuditPolicy patches are not alerted)",
    )
    alerts.add_argument(
        "--cluster-rules-namespace",
        default=_env("AUDITLOCK_CLUSTER_RULES_NAMESPACE", _env("POD_NAMESPACE")),
        help="AuditAlertRules in this namespace apply to every namespace (default: the "
        "operator's own)",
    )
    alerts.add_argument(
        "--trail-watch-seconds",
        type=float,
        default=_env_float("AUDITLOCK_TRAIL_WATCH_SECONDS", 25),
        help="how often the trail watcher reads every stream's newest checkpoint",
    )
    alerts.add_argument("--no-alerts", action="store_true", help="evaluate no alert rules at all")
    run.set_defaults(func=_run)
    config = sub.add_parser("webhook-config", help="print the webhook configurations (YAML)")
    config.add_argument("--name", default="auditlock")
    config.add_argument("--ca-file", type=Path, required=True)
    where = config.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="https://HOST:PORT of the operator")
    where.add_argument("--service", help="NAMESPACE/NAME[:PORT] of the operator's Service")
    config.set_defaults(func=_webhook_config)
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), EXIT_USAGE)[1])


def _path(name: str) -> Path | None:
    value = _env(name)
    return Path(value) if value else None


def _webhook_config(args: argparse.Namespace) -> int:
    from auditlock.operator.webhook_config import webhook_configurations

    service = None
    if args.service:
        ref, _, port = args.service.partition(":")
        namespace, _, name = ref.partition("/")
        service = {"namespace": namespace, "name": name, "port": int(port or 443)}
    docs = webhook_configurations(
        args.name,
        args.ca_file.read_bytes(),
        url=args.url,
        service=service,
        # The operator's own pods must never wait on the operator.
        exclude_namespaces=[service["namespace"]] if service else [],
    )
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return EXIT_OK


def _alert_settings(args: argparse.Namespace) -> Any:
    from auditlock.alerts.builtin import ALL
    from auditlock.operator.alerting import AlertSettings

    unknown = sorted(set(args.disable_builtin_alert) - set(ALL))
    if unknown:
        raise SystemExit(
            f"auditlock operator: --disable-builtin-alert {', '.join(unknown)}: no such "
            f"built-in alert; known: {', '.join(ALL)}"
        )
    secret: bytes | None = None
    if args.alert_webhook_url:
        if args.alert_webhook_secret_file is None:
            raise SystemExit(
                "auditlock operator: --alert-webhook-url needs --alert-webhook-secret-file"
            )
        secret = args.alert_webhook_secret_file.read_bytes().strip()
    return AlertSettings(
        enabled=not args.no_alerts,
        alertmanager_url=args.alertmanager_url,
        webhook_url=args.alert_webhook_url,
        webhook_secret=secret,
        disabled_builtins=frozenset(args.disable_builtin_alert),
        own_identities=tuple(args.operator_identity),
        cluster_rules_namespace=args.cluster_rules_namespace,
        watch_seconds=args.trail_watch_seconds,
    )


class _UsageError(Exception):
    """A flag the operator cannot start with: `auditlock operator: <message>`, exit 2."""


def _namespaced_name(flag: str, value: str) -> tuple[str, str] | None:
    """The NAMESPACE/NAME given to `flag`; None when it is empty."""
    if not value:
        return None
    namespace, _, name = value.partition("/")
    if not namespace or not name:
        raise _UsageError(f"{flag} must be NAMESPACE/NAME")
    return namespace, name


def _run(args: argparse.Namespace) -> int:
    try:
        return _run_operator(args)
    except _UsageError as exc:
        print(f"auditlock operator: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run_operator(args: argparse.Namespace) -> int:
    from kubernetes.config import ConfigException

    from auditlock.operator import tls
    from auditlock.operator.kube import kopf_connection, load_api_client
    from auditlock.operator.runner import DEFAULT_SIDECAR_IMAGE, Operator, OperatorConfig
    from auditlock.operator.webhook_server import Listener

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.tls_dir:
        args.tls_cert_file = args.tls_dir / "tls.crt"
        args.tls_key_file = args.tls_dir / "tls.key"
    if args.tls_cert_file and args.tls_key_file:
        cert = tls.from_files(args.tls_cert_file, args.tls_key_file)
    else:
        logging.warning("no --tls-cert-file/--tls-key-file: using a self-signed certificate")
        cert = tls.self_signed(["localhost", "127.0.0.1"])
    listeners = [Listener(args.webhook_host, args.webhook_port, cert.server_context())]
    if args.audit_port:
        listeners.append(Listener(args.webhook_host, args.audit_port, cert.server_context()))
    if args.health_port:
        listeners.append(Listener(args.webhook_host, args.health_port, None))
    if args.cluster_name:
        from auditlock.operator.stream_ids import ClusterNameError, check_cluster_name

        try:
            check_cluster_name(args.cluster_name)
        except ClusterNameError as exc:
            raise _UsageError(f"--cluster-name: {exc}") from None
    identity = _namespaced_name("--cluster-identity-configmap", args.cluster_identity_configmap)
    hash_key = _namespaced_name("--secret-hash-key", args.secret_hash_key)
    try:
        api_client = load_api_client(args.kubeconfig)
    except (ConfigException, OSError) as exc:
        raise _UsageError(f"cannot load Kubernetes credentials: {exc}") from None
    if args.priority == "random":
        import secrets

        priority = secrets.randbelow(2**31)
    else:
        try:
            priority = int(args.priority)
        except ValueError:
            raise _UsageError(
                f"--priority {args.priority!r} is not an integer or 'random'"
            ) from None
    host, _, port = args.collector.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _UsageError(f"--collector {args.collector!r} is not HOST:PORT")
    token = args.audit_token_file.read_text().strip() if args.audit_token_file else None
    root_key = None
    if args.root_key_file is not None:
        from auditlock.ledger.errors import KeyFileError
        from auditlock.ledger.keys import Signer, load_private_key

        try:
            root_key = Signer(load_private_key(args.root_key_file))
        except KeyFileError as exc:
            raise _UsageError(f"--root-key-file: {exc}") from None
    witness_secret = _namespaced_name("--witness-key-secret", args.witness_key_secret)
    if not args.witness_seconds >= 1:
        raise _UsageError("--witness-seconds must be at least 1")
    from auditlock.operator.witness import WitnessSettings

    config = OperatorConfig(
        api_client=api_client,
        kopf_connection=kopf_connection(api_client) if args.kubeconfig else None,
        webhook_listeners=listeners,
        sidecar_image=args.sidecar_image or DEFAULT_SIDECAR_IMAGE,
        sidecar_mode=args.sidecar_mode,
        sidecar_pull_policy=args.sidecar_pull_policy,
        cluster=args.cluster_name,
        identity_config_map=identity,
        secret_hash_key=hash_key,
        namespaces=args.namespace,
        standalone=args.standalone or args.peering is None,
        peering_name=args.peering,
        priority=priority,
        refresh_seconds=args.refresh_seconds,
        checkpoint_scan_seconds=args.checkpoint_scan_seconds,
        audit_token=token,
        collector=f"{host or '127.0.0.1'}:{port}",
        watch_fallback=args.watch_fallback,
        abandon_grace_seconds=args.abandon_grace_seconds or None,
        alerts=_alert_settings(args),
        root_key=root_key,
        certificate_validity_seconds=args.certificate_validity_seconds,
        certificate_url=args.certificate_url,
        certificate_ca=(
            args.certificate_ca_file.read_text() if args.certificate_ca_file is not None else ""
        ),
        witness_key_secret=witness_secret,
        witness=WitnessSettings(args.witness_seconds, args.witness_tsa_url),
    )
    from auditlock.operator.secret_hashes import HashKeyError

    try:
        asyncio.run(Operator(config).run())
    except HashKeyError as exc:
        raise _UsageError(f"--secret-hash-key: {exc}") from None
    return EXIT_OK
