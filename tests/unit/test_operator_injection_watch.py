"""The collector sees the app's config files it is told to watch, read-only."""

from auditlock.operator.injection import watched_mounts


def _pod() -> dict:
    return {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "volumeMounts": [
                        {"name": "settings", "mountPath": "/etc/app"},
                        {"name": "creds", "mountPath": "/var/run/creds/"},
                        {"name": "data", "mountPath": "/data"},
                    ],
                }
            ]
        }
    }


def test_watched_paths_get_the_app_volume_read_only_at_the_same_path() -> None:
    mounts = watched_mounts(_pod(), ["/etc/app/settings.yaml", "/var/run/creds"])
    assert mounts == [
        {"name": "settings", "mountPath": "/etc/app", "readOnly": True},
        {"name": "creds", "mountPath": "/var/run/creds/", "readOnly": True},
    ]


def test_volumes_not_watched_are_not_shared_with_the_collector() -> None:
    assert watched_mounts(_pod(), ["/etc/other"]) == []
    assert watched_mounts(_pod(), []) == []


def test_a_prefix_that_is_not_a_path_ancestor_does_not_match() -> None:
    assert watched_mounts(_pod(), ["/etc/application.yaml"]) == []
