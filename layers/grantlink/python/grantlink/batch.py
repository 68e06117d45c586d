"""Partial-batch processing that fits the function's time: records run concurrently (bounded), and a record is
not started once too little time is left to finish it — it is reported failed, so SQS delivers it again later,
instead of being cut off mid-refresh by the function's timeout (which would redeliver the whole batch).

Powertools' `BatchProcessor` does the reporting (`batchItemFailures`); this only changes how records are run.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType


class NotStarted(Exception):
    """Too little of the invocation's time was left to start this record; SQS will deliver it again."""


class ConcurrentBatchProcessor(BatchProcessor):
    """A `BatchProcessor` for SQS that runs up to `concurrency` records at once and starts none with less than
    `reserve_seconds` of the invocation left."""

    def __init__(self, concurrency: int, reserve_seconds: float) -> None:
        # A batch whose records all failed (e.g. all left unstarted) is still reported record by record.
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self.concurrency = concurrency
        self.reserve_ms = reserve_seconds * 1000

    def process(self) -> list[tuple]:
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="record") as pool:
            return list(pool.map(self._process_record, self.records))

    def time_left_check(self) -> None:
        """Call first in the record handler: raises `NotStarted` when the rest of the invocation is too short."""
        context: Any = self.lambda_context
        if context is not None and context.get_remaining_time_in_millis() < self.reserve_ms:
            raise NotStarted()
