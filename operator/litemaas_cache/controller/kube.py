"""The one Kubernetes API call kopf does not make for us: deleting an object (ttlSecondsAfterFinished)."""

from __future__ import annotations

import asyncio
import os

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


def _api() -> client.CustomObjectsApi:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        # KUBECONFIG is read now, not when the kubernetes package was imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi()


async def delete_custom_object(group: str, version: str, plural: str, namespace: str | None, name: str) -> None:
    """Delete a namespaced custom object; an object already gone is fine."""

    def delete() -> None:
        try:
            _api().delete_namespaced_custom_object(group, version, namespace or "default", plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    await asyncio.to_thread(delete)
