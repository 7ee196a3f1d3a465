"""The emulator's test kit: the pipeline's ZeroGPU client plus the calls only tests and walkthroughs make.

The Lambda layer's client (batchdrop.integrations.zerogpu) has what the pipeline uses and nothing else;
this subclass adds reading back and deleting a file, for tests that check what the API holds.
"""

from __future__ import annotations

from batchdrop.integrations.zerogpu import FileDeleted, FileObject, ZeroGPUClient
from batchdrop.integrations.zerogpu.calls import json_handler
from batchdrop.integrations.zerogpu.client import path_id


class FullClient(ZeroGPUClient):
    def retrieve_file(self, file_id: str) -> FileObject:
        """Fetch one file object."""
        return self._calls.call("GET", f"/v1/files/{path_id(file_id)}", handle=json_handler(FileObject))

    def delete_file(self, file_id: str) -> FileDeleted:
        """Delete a file. A 404 on a retry after a lost reply counts as deleted."""
        return self._calls.call(
            "DELETE",
            f"/v1/files/{path_id(file_id)}",
            handle=json_handler(FileDeleted),
            gone_after_retry=lambda: FileDeleted(id=file_id, deleted=True),
        )
