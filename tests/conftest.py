"""Settings shared by every tier: offline AWS credentials, Powertools quiet and deterministic."""

from __future__ import annotations

import os

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "batchdrop",
        "POWERTOOLS_METRICS_NAMESPACE": "batchdrop",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_DEV": "false",
    }
)
for leaked in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(leaked, None)

# moto's transactions copy the whole table (see tools/batchdrop_tools/local/moto_fixes.py): at the sizes the burst
# tests reach that alone would take most of the suite's time.
from batchdrop_tools.local.moto_fixes import install as _install_moto_fixes  # noqa: E402

_install_moto_fixes()
