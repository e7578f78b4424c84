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


def _env_default(kind: Any, env: str, default: Any) -> Any:
    """A flag's default from its environment variable: the value as `kind`, a list from a
    comma-separated value (empty items dropped), True from "true", a Path only when set;
    an unset (for numbers, also an empty) variable leaves `default`."""
    value = os.environ.get(env)
    if kind is list:
        return [item for item in (value or "").split(",") if item]
    if kind is bool:
        return value == "true"
    if kind is Path:
        return Path(value) if value else default
    if kind in (int, float):
        return kind(value or default)
    return default if value is None else value


def _flag(
    group: Any,
    flag: str,
    kind: Any = str,
    default: Any = None,
    *,
    env: str | None = None,
    **options: Any,
) -> None:
    """Declare `flag`, whose default is read from `env` (AUDITLOCK_ and the flag's name,
    unless given): every operator flag has an environment variable (docs/operator.md)."""
    env = env or "AUDITLOCK_" + flag.removeprefix("--").replace("-", "_").upper()
    value = _env_default(kind, env, default)
    if kind is list:
        options["action"] = "append"
    elif kind is bool:
        options["action"] = "store_true"
    elif kind is not str:
        options["type"] = kind
    group.add_argument(flag, default=value, **options)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the AuditPolicy operator (kopf + webhooks + cluster capture)",
        description="The auditlock operator. Every flag has an AUDITLOCK_* environment "
        "variable equivalent (docs/operator.md).",
    )
    sub = parser.add_subparsers(dest="operator_command", metavar="ACTION")
    run = sub.add_parser("run", help="run the operator until SIGTERM")
    _flag(run, "--kubeconfig", env="KUBECONFIG", help="default: in-cluster")
    _flag(
        run, "--namespace", list, env="AUDITLOCK_NAMESPACES",
        help="serve only these namespaces (repeatable); default: all",
    )  # fmt: skip
    _flag(run, "--webhook-host", str, "0.0.0.0")
    _flag(run, "--webhook-port", int, 9443)
    _flag(
        run, "--tls-dir", Path,
        help="directory with tls.crt and tls.key (a kubernetes.io/tls Secret mount)",
    )  # fmt: skip
    _flag(
        run, "--audit-port", int, 0,
        help="also serve the webhooks and /audit on this TLS port (0: only --webhook-port)",
    )  # fmt: skip
    _flag(run, "--tls-cert-file", Path)
    _flag(run, "--tls-key-file", Path)
    _flag(
        run, "--health-port", int, 8080, help="plain HTTP /healthz, /readyz, /metrics (0 disables)"
    )
    _flag(run, "--sidecar-image")
    _flag(run, "--sidecar-mode", str, "auto", choices=["auto", "native", "classic"])
    _flag(
        run, "--cluster-name", str, "",
        help="a DNS label naming this cluster, part of every stream id; default: derived "
        "from the kube-system namespace's UID",
    )  # fmt: skip
    _flag(
        run, "--cluster-identity-configmap", str, "", metavar="NAMESPACE/NAME",
        help="publish the cluster name in this ConfigMap (key clusterName) at start, for "
        "the collector beside the operator",
    )  # fmt: skip
    _flag(
        run, "--secret-hash-key", str, "", metavar="NAMESPACE/NAME",
        help="Secret holding the key that Secret values are hashed under (HMAC-SHA256) in "
        "the trail; created with a random key when absent. Without it, Secret writes are "
        "recorded without hashes of their values",
    )  # fmt: skip
    _flag(
        run, "--sidecar-pull-policy", str, "IfNotPresent",
        choices=["Always", "IfNotPresent", "Never"],
    )  # fmt: skip
    run.add_argument(
        "--standalone",
        action="store_true",
        help="no kopf peering (one replica); the default unless --peering is given",
    )
    _flag(
        run, "--priority", str, "0",
        help="kopf peering priority: an integer, or 'random' so that several replicas get "
        "different ones (kopf pauses every replica that sees a live peer of equal "
        "priority; the highest leads, the others take over when it is gone)",
    )  # fmt: skip
    run.add_argument("--verbose", action="store_true", help="debug logging")
    _flag(
        run, "--peering",
        help="kopf peering name for several replicas (needs the KopfPeering CRD)",
    )  # fmt: skip
    _flag(
        run, "--collector", str, "127.0.0.1:8686",
        help="host:port of the HTTP intake of the operator's own collector; audit "
        "batches are answered 200 only once it has stored them",
    )  # fmt: skip
    _flag(
        run, "--audit-retry-after-seconds", int, 1,
        help="the Retry-After of an audit batch the collector did not store; the API "
        "server holds such a batch about 55 times this long before giving up on it (0: "
        "it resends at once, 10 times)",
    )  # fmt: skip
    _flag(
        run, "--audit-token-file", Path,
        help="bearer token the API server's audit webhook must present on /audit",
    )  # fmt: skip
    _flag(
        run, "--root-key-file", Path,
        help="Ed25519 private key (PEM) that certifies collectors' per-pod keys on "
        "/v1/certificates (docs/operator.md, 'Per-pod keys'); unset: no certificates, and "
        "policies with per-pod keys (the default) are not Ready (NoRootKey)",
    )  # fmt: skip
    _flag(
        run, "--certificate-validity-seconds", float, 86400,
        help="how long a per-pod key's certificate is valid; collectors renew at two thirds",
    )  # fmt: skip
    _flag(
        run, "--certificate-url", str, "",
        help="https URL of /v1/certificates as collectors reach it (the webhook Service)",
    )  # fmt: skip
    _flag(
        run, "--certificate-ca-file", Path,
        help="CA (PEM) of the operator's TLS certificate, handed to per-pod collectors",
    )  # fmt: skip
    _flag(
        run, "--watch-fallback", bool,
        help="also watch ConfigMaps, Secrets, Roles, RoleBindings (for clusters without "
        "API server audit)",
    )  # fmt: skip
    _flag(run, "--refresh-seconds", float, 60)
    _flag(
        run, "--checkpoint-scan-seconds", float, 300,
        help="how often the destination is listed for its newest checkpoint",
    )  # fmt: skip
    _flag(
        run, "--abandon-grace-seconds", float, 300,
        help="close the stream of a pod that is gone for good after this long (an "
        "'abandon' checkpoint, docs/operator.md); 0 never closes them",
    )  # fmt: skip
    witness = run.add_argument_group("the witness of every stream (docs/operator.md)")
    _flag(
        witness, "--witness-key-secret", str, "", metavar="NAMESPACE/NAME",
        help="Secret holding the operator's Ed25519 key (ed25519.pem): every "
        "--witness-seconds a signed record of each stream's newest checkpoint is stored in "
        "every destination (FORMAT.md section 16). Empty: no witness",
    )  # fmt: skip
    _flag(
        witness, "--witness-seconds", float, 60,
        help="how often the witness reads every destination and stores a record",
    )  # fmt: skip
    _flag(
        witness, "--witness-tsa-url", metavar="URL",
        help="an RFC 3161 time-stamping authority: each witness record is timestamped and "
        "the token stored beside it; unset: no tokens",
    )  # fmt: skip
    alerts = run.add_argument_group("alerts (docs/alerts.md)")
    _flag(
        alerts, "--alertmanager-url",
        help="base URL of Alertmanager (alerts go to URL/api/v2/alerts); unset: none",
    )  # fmt: skip
    _flag(
        alerts, "--alert-webhook-url",
        help="a webhook every alert is POSTed to, signed with HMAC-SHA256",
    )  # fmt: skip
    _flag(
        alerts, "--alert-webhook-secret-file", Path,
        help="file holding the webhook's signing secret (required with --alert-webhook-url)",
    )  # fmt: skip
    _flag(
        alerts, "--disable-builtin-alert", list, env="AUDITLOCK_DISABLED_BUILTIN_ALERTS",
        metavar="NAME", help="turn off a built-in alert (repeatable; docs/alerts.md lists them)",
    )  # fmt: skip
    _flag(
        alerts, "--operator-identity", list, metavar="USER",
        help="the operator's own API identity (its AuditPolicy patches are not alerted)",
    )  # fmt: skip
    _flag(
        alerts, "--cluster-rules-namespace", str, os.environ.get("POD_NAMESPACE"),
        help="AuditAlertRules in this namespace apply to every namespace (default: the "
        "operator's own)",
    )  # fmt: skip
    _flag(
        alerts, "--trail-watch-seconds", float, 25,
        help="how often the trail watcher reads every stream's newest checkpoint",
    )  # fmt: skip
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
    if args.audit_retry_after_seconds < 0:
        raise _UsageError("--audit-retry-after-seconds must not be negative")
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
        audit_retry_after_seconds=args.audit_retry_after_seconds,
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
        witness=WitnessSettings(args.witness_seconds, args.witness_tsa_url or None),
    )
    from auditlock.operator.secret_hashes import HashKeyError

    try:
        asyncio.run(Operator(config).run())
    except HashKeyError as exc:
        raise _UsageError(f"--secret-hash-key: {exc}") from None
    return EXIT_OK
