"""Where moto (the local stack's AWS, and the tests') falls short of DynamoDB at batchdrop's sizes.

moto 5 backs up each table a transaction touches with `copy.deepcopy` before applying it, so one
TransactWriteItems costs time in proportion to the whole table: about 0.4 s at 6,000 items, which made
a burst of a thousand files take the better part of an hour. `install()` keeps moto's own transaction
logic and replaces only the backup: the items the transaction names are copied before it runs and put
back if it is cancelled, which is all a rollback needs (the transaction writes only those items).

Its Query on a table's own key reads every item of the table to find one partition's: a job's shards
cost the whole table's size each time. `install()` hands that query the partition alone.

moto's backends are not safe for concurrent requests either (a transaction's rollback replaces a table
object that another request may be writing): the local stack's server takes requests one at a time.
"""

from __future__ import annotations

import copy
import inspect
import threading
from typing import Any

_installed = False
_lock = threading.Lock()


def install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        from moto.dynamodb import models
        from moto.dynamodb.models.table import Table

        original = models.DynamoDBBackend.transact_write_items

        class _NoTableCopies:
            """`copy` as moto's module sees it: a table is 'copied' as itself (the items are saved below)."""

            def __getattr__(self, name: str) -> Any:
                return getattr(copy, name)

            @staticmethod
            def deepcopy(value: Any, memo: Any = None) -> Any:
                return value if isinstance(value, Table) else copy.deepcopy(value, memo)

        def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
            saved = []
            for entry in transact_items:
                _, operation = next(iter(entry.items()))
                table = self.tables.get(operation.get("TableName"))
                if table is None:
                    continue
                key = operation.get("Key")
                if key is None and "Item" in operation:
                    attributes = operation["Item"]
                    key = {table.hash_key_attr: attributes[table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = attributes[table.range_key_attr]
                if key is None:
                    continue
                hash_key, range_key = self.get_keys_value(table, key)
                saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
            try:
                original(self, transact_items)
            except Exception:
                for table, hash_key, range_key, item in reversed(saved):
                    _restore(table, hash_key, range_key, item)
                raise

        original_query = Table.query
        signature = inspect.signature(original_query)

        def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
            arguments = signature.bind(self, hash_key, *args, **kwargs).arguments
            index_name = arguments.get("index_name")
            if index_name:
                candidates = _index_partition(self, index_name, arguments.get("hash_key_conditions"))
            elif self.has_range_key and hash_key is not None:
                candidates = list((self.items.get(hash_key) or {}).values())
            else:
                candidates = None
            if candidates is None:
                return original_query(self, hash_key, *args, **kwargs)
            self.all_items = lambda: iter(candidates)
            try:
                return original_query(self, hash_key, *args, **kwargs)
            finally:
                del self.all_items

        models.copy = _NoTableCopies()  # type: ignore[assignment,attr-defined]
        models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
        Table.query = query  # type: ignore[method-assign]
        _installed = True


def _index_partition(table: Any, index_name: str, hash_conditions: Any) -> list[Any] | None:
    """The items whose index hash key equals the queried one (moto then checks each as before), found by
    comparing raw values rather than through moto's typed comparisons; None if the query is not that."""
    index = next((i for i in table.all_indexes() if i.name == index_name), None)
    hashes = [key["AttributeName"] for key in (index.schema if index else []) if key["KeyType"] == "HASH"]
    if len(hashes) != 1 or not hash_conditions or len(hash_conditions) != 1:
        return None
    attribute, wanted = hash_conditions[0]
    if attribute != hashes[0]:
        return None
    matching = []
    for item in table.all_items():
        value = item.attrs.get(attribute)
        if value is not None and value.type == wanted.type and value.value == wanted.value:
            matching.append(item)
    return matching


def _restore(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    if item is None:
        if table.get_item(hash_key, range_key) is not None:
            table.delete_item(hash_key, range_key)
    elif range_key is not None:
        table.items[hash_key][range_key] = item
    else:
        table.items[hash_key] = item
