"""The lake's and the search index's publish is a compare-and-swap on the version observed when staging.

The partition lock already keeps writers of a day apart; this is the second fence, for a writer whose lock was
lost without it noticing (its session ended after its last check). The sink verbs are driven directly, without the
lock, to put a stale writer exactly where the lock cannot stop it: it staged (noting the live version), another
writer published, then the stale one publishes. Its publish must fail whole and leave the other's day in place,
for a day that had content and for a day published for the first time meanwhile.
"""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from idem_platform.storage.audit import AuditRules
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink
from idem_platform.storage.fingerprint import partition_digests
from idem_platform.storage.lake_store import LakeSink
from idem_platform.storage.partition_store import AssetTarget, StalePublish, publish_partitions, published_entries
from idem_platform.storage.schema import TableDeclaration

DAY = "2026-03-01"
DECL = TableDeclaration.build({"id": "int", "who": "string"}, key=["id"])


def frame(who: str, rows: int) -> pd.DataFrame:
    return DECL.coerce(pd.DataFrame({"id": range(rows), "who": [who] * rows, "partition_date": [DAY] * rows}))


@pytest.fixture(params=["lake", "elasticsearch"])
def sink(request, lake, es):
    if request.param == "lake":
        yield LakeSink(lake)
        return
    sink = ElasticsearchIndexSink(es, replicas=0)
    yield sink
    sink.client.close()


def target(sink) -> AssetTarget:
    return AssetTarget(f"cas_{uuid.uuid4().hex[:8]}", DECL, AuditRules())


@pytest.mark.parametrize("staged", ["before", "after"], ids=["staged-before-the-other", "staged-after-the-other"])
@pytest.mark.parametrize("first_publish", [False, True], ids=["day-with-content", "first-publish"])
def test_a_stale_publish_fails_whole_and_leaves_the_newer_day(sink, postgres, first_publish, staged):
    """`before`: the newer writer removed the stale one's staged file/index as an orphan; `after`: the stale one's
    stage survives, only the version it noted under its (lost) lock tells it apart."""
    t = target(sink)
    if not first_publish:
        publish_partitions(sink, postgres, t, [DAY], frame("old", 5), "run-old")
    sink.prepare(None, t)
    observed = sink.versions(t, [DAY])  # what the stale writer saw live while it held the lock
    assert (observed[DAY] is None) == first_publish
    if staged == "before":
        stale = sink.stage(None, t, [DAY], frame("stale", 7), "run-stale")
    publish_partitions(sink, postgres, t, [DAY], frame("new", 3), "run-new")  # the lock's new owner
    if staged == "after":
        stale = sink.stage(None, t, [DAY], frame("stale", 7), "run-stale")
        stale.expected = observed
    with pytest.raises(StalePublish, match="another writer"):
        sink.publish(None, t, stale)
    sink.discard(t, stale)

    held = sink.read(t, [DAY])
    assert sorted(held["who"].unique()) == ["new"] and len(held) == 3
    with postgres.connect() as conn:
        assert published_entries(sink, conn, t, [DAY])[DAY].run_id == "run-new"


def test_an_intent_whose_version_is_live_is_the_published_day(sink, postgres):
    """A crash between publish and confirmation: readers take the unconfirmed intent the sink holds."""
    from idem_platform.storage import ledger

    t = target(sink)
    publish_partitions(sink, postgres, t, [DAY], frame("old", 5), "run-old")
    staged = sink.stage(None, t, [DAY], frame("new", 4), "run-crashed")
    digest = partition_digests(frame("new", 4), DECL, [DAY])[DAY]
    entry = ledger.LedgerEntry(asset=t.asset, partition=DAY, sink=sink.name, location="x", run_id="run-crashed",
                               row_count=4, fingerprint=digest.fingerprint, previous_fingerprint=None,
                               store=sink.store(t), version=staged.versions[DAY])
    with postgres.connect(autocommit=True) as conn:
        ledger.record_intents(conn, [entry])
        assert published_entries(sink, conn, t, [DAY])[DAY].run_id == "run-old"  # intent, not yet published
        sink.publish(None, t, staged)  # ... and the process dies before confirming
        resolved = published_entries(sink, conn, t, [DAY])[DAY]
        assert (resolved.run_id, resolved.fingerprint, resolved.confirmed) == ("run-crashed", digest.fingerprint, False)

    rerun = publish_partitions(sink, postgres, t, [DAY], frame("new", 4), "run-rerun")
    assert rerun[0].previous_fingerprint == digest.fingerprint and rerun[0].changed is False
    with postgres.connect() as conn:
        assert [e.run_id for e in ledger.history(conn, asset=t.asset)] == ["run-old", "run-crashed", "run-rerun"]
