"""Worker Versioning: which build of the worker code a run executes on.

A worker started with a deployment name and a build id (`worker.py --deployment NAME --build-id ID`,
or ENSEMBLE_DEPLOYMENT / ENSEMBLE_BUILD_ID) joins that Temporal Worker Deployment as one version.
An operator makes a version current (`temporal worker deployment set-current-version`); new runs
start on the current version. Each flow says what its runs do after that:

- `pinned`: a run stays on the build it started on until it ends, so a run parked at an approval
  gate for days resumes on the code that recorded its history. The old build's workers keep
  running until its pinned runs drain (`temporal worker deployment describe-version`).
- `auto_upgrade`: a run moves to the current build at its next workflow task; the new code must
  replay the old history (`starter.py upgrade-check` proves that before a rollout).

A flow's `versioning:` field chooses; without it, flows with an approval gate are pinned and the
rest auto-upgrade. Workers default every run to pinned; a run of an auto-upgrade flow is started
with an auto-upgrade override.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from temporalio.common import (
    AutoUpgradeVersioningOverride,
    VersioningBehavior,
    VersioningOverride,
    WorkerDeploymentVersion,
)

from ensemble.spec import FlowSpec
from ensemble.spec.errors import InputError

if TYPE_CHECKING:  # the SDK's worker package loads in workers only
    from temporalio.worker import WorkerDeploymentConfig

DEPLOYMENT_ENV = "ENSEMBLE_DEPLOYMENT"
BUILD_ID_ENV = "ENSEMBLE_BUILD_ID"


def deployment_config(deployment: str | None = None, build_id: str | None = None) -> WorkerDeploymentConfig | None:
    """The worker's Worker Deployment version from its flags or environment; None when unversioned."""
    deployment = deployment or os.environ.get(DEPLOYMENT_ENV) or None
    build_id = build_id or os.environ.get(BUILD_ID_ENV) or None
    if not deployment and not build_id:
        return None
    if not (deployment and build_id):
        raise InputError(
            f"Worker Versioning needs both a deployment name and a build id: give --deployment and --build-id "
            f"(or {DEPLOYMENT_ENV} and {BUILD_ID_ENV})"
        )
    if "." in deployment:
        raise InputError(
            f"deployment name {deployment!r} must not contain '.' (Temporal writes versions as NAME.BUILD_ID)"
        )
    from temporalio.worker import WorkerDeploymentConfig

    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name=deployment, build_id=build_id),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


def has_gate(value: Any) -> bool:
    """Whether a flow (or any nested step of it) has an approval gate."""
    if isinstance(value, dict):
        return value.get("gate") is not None or any(has_gate(v) for v in value.values())
    if isinstance(value, list):
        return any(has_gate(v) for v in value)
    return False


def behavior(flow: FlowSpec) -> str:
    """`pinned` or `auto_upgrade`: what the flow declares, else pinned when it has a gate."""
    if flow.versioning:
        return flow.versioning
    return "pinned" if has_gate(flow.model_dump(mode="json", include={"steps"})) else "auto_upgrade"


def start_override(flow: FlowSpec) -> VersioningOverride | None:
    """The versioning override to start a run of this flow with (None: the worker's default, pinned)."""
    return AutoUpgradeVersioningOverride() if behavior(flow) == "auto_upgrade" else None
