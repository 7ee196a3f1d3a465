"""What the logic functions need from the outside world, built once per invocation by the handlers.

Tests build the same object with moto clients, the in-process emulator and a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchdrop.integrations.notifier import Notifier
from batchdrop.integrations.queues import Queues
from batchdrop.integrations.shard_copies import LocalShards
from batchdrop.integrations.store import JobStore
from batchdrop.integrations.zerogpu import ZeroGPUClient
from batchdrop.observability import logger
from batchdrop.pricing import PriceTable
from batchdrop.settings import Settings

# Stop starting new work when less than this is left of the invocation.
DEADLINE_MARGIN_SECONDS = 20.0


@dataclass
class Services:
    settings: Settings
    s3: Any
    sqs: Any
    store: JobStore
    notifier: Notifier
    api_factory: Callable[[], ZeroGPUClient]
    """Creates the API client on first use: a rejected input never needs credentials."""
    workdir: str
    owner: str
    """Who holds leases taken by this invocation (the Lambda request id)."""
    remaining_time: Callable[[], float] = lambda: 900.0
    clock: Callable[[], float] = time.time
    local_shards: LocalShards = field(init=False, repr=False)
    """The shard files this invocation's split wrote, for its own uploads to read (see shard_copies.py)."""
    _prices: PriceTable | None = field(default=None, init=False, repr=False)
    _api: ZeroGPUClient | None = field(default=None, init=False, repr=False)
    _api_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.local_shards = LocalShards(self.workdir)

    @property
    def api(self) -> ZeroGPUClient:
        """One client per invocation, created on first use (the poller's threads share it)."""
        with self._api_lock:
            if self._api is None:
                self._api = self.api_factory()
            return self._api

    @property
    def prices(self) -> PriceTable:
        """The price table: the shipped one, with PRICE_TABLE's changes, then the SSM parameter's (read once
        per invocation, cached for 5 minutes). A parameter that cannot be read or does not read as a table is
        logged as an error and left out: a cost is informational, and the job goes on."""
        if self._prices is None:
            table = self.settings.prices
            name = self.settings.price_table_parameter
            if name:
                try:
                    from aws_lambda_powertools.utilities import parameters

                    table = table.merged_json(str(parameters.get_parameter(name, max_age=300)))
                except Exception as error:  # a cost must not stop a job
                    logger.error(
                        "the price table parameter cannot be used; prices without it",
                        extra={"parameter": name, "error": str(error).splitlines()[0][:300]},
                    )
            self._prices = table
        return self._prices

    @property
    def queues(self) -> Queues:
        return Queues(
            self.sqs,
            ingest_queue_url=self.settings.ingest_queue_url,
            collect_queue_url=self.settings.collect_queue_url,
        )

    def now(self) -> int:
        return int(self.clock())

    def time_left(self) -> bool:
        return self.remaining_time() > DEADLINE_MARGIN_SECONDS

    def close(self) -> None:
        # The work copies still being written get what is left of the invocation, less the margin.
        self.local_shards.close(timeout=max(1.0, self.remaining_time() - DEADLINE_MARGIN_SECONDS))
        if self._api is not None:
            self._api.close()
            self._api = None
