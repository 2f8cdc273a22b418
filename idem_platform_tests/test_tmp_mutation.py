import pytest
from idem_platform.storage.elasticsearch_store import ElasticsearchIndexSink
from idem_platform_tests import test_elasticsearch_store as t

def test_reader_catches_two_step_swap(monkeypatch, es, postgres, search_asset_name):
    orig = ElasticsearchIndexSink.publish
    def publish(self, conn, target, staged):
        # non-atomic: remove old aliases first, then add
        old = self.client.indices.get_alias(index=self.day_alias(target, t.DAY), ignore_unavailable=True).body
        acts = [{"remove": {"index": i, "alias": a}} for i, info in old.items() for a in info["aliases"]]
        if acts:
            self.client.indices.update_aliases(actions=acts)
        orig(self, conn, target, staged)
    monkeypatch.setattr(ElasticsearchIndexSink, "publish", publish)
    with pytest.raises(AssertionError) as e:
        t.test_readers_never_see_a_partial_day_during_reruns.__wrapped__(es, postgres, ElasticsearchIndexSink(es), search_asset_name) if hasattr(t.test_readers_never_see_a_partial_day_during_reruns, "__wrapped__") else t.test_readers_never_see_a_partial_day_during_reruns(es, postgres, ElasticsearchIndexSink(es), search_asset_name)
    print(str(e.value)[:300])
