"""The pipeline's fixed timing policy, in one place (the operator's bounds are in settings.Settings).

The leases must outlast the function that holds them (tests/unit/test_template.py ties them to the
timeouts in template.yaml): a lease that ends while its holder still runs lets a second worker in.
"""

from __future__ import annotations

SUBMIT_TIMEOUT_SECONDS = 900
COLLECT_TIMEOUT_SECONDS = 900
POLL_TIMEOUT_SECONDS = 50

SUBMIT_LEASE_MARGIN_SECONDS = 60
"""A shard's submission lease is the submit invocation's remaining time plus this."""
NOTIFY_LEASE_SECONDS = 960
"""Whoever claims a job's announcement holds it this long (longer than a collect or submit run)."""
SUBMIT_ANNOUNCE_LEASE_SECONDS = 600
"""The claim on sending `Batch Job Submitted`: longer than one EventBridge call can take, retries included."""
HANDOVER_RETRY_SECONDS = 120
"""A shard handed to the submit function is handed again after this long if it has not moved."""
RETRY_LATER_SECONDS = 120
"""A submission deferred by an API failure is tried again after this long."""
COLLECT_RETRY_SECONDS = 900
"""An ended shard is handed to collect again after this long if it has not been collected."""
CREATE_LOOKBACK_SECONDS = 600
"""How far before a checkpoint the API's lists are searched for a batch or file to adopt."""
NOTIFY_GIVE_UP_SECONDS = 86_400
"""An announcement that still fails a day after the job ended is given up (AnnouncementsAbandoned)."""
COLLECT_GIVE_UP_SLACK_SECONDS = 3_600
"""Past COLLECT_RETRY_LIMIT_HOURS plus this, a shard collect never took is ended by the poller."""
