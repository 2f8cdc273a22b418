"""Search cluster compatibility: a server that fails the `elasticsearch` client's product check is refused by name,
before anything is written, and the check is kept, not bypassed.

No OpenSearch server can run here, so `ProductHeaderProxy` simulates what OpenSearch observably does differently
for this client: it forwards every request to the real search server of the session (osmem, or `IDEM_ES_URL`'s
cluster over http) and drops the `X-Elastic-Product` response header, which OpenSearch never sends. osmem
already answers `GET /` as OpenSearch does (`version.distribution` "opensearch", the OpenSearch tagline), so the
proxy leaves bodies alone. The same proxy keeping the header is the control: through it everything works, so
the refusal comes from the header alone. No mock of the client: the official client talks HTTP to a real server.

No `from __future__ import annotations` here: Dagster must resolve the asset function's annotations.
"""

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
import pytest
from elasticsearch import UnsupportedProductError, helpers

from idem_platform.declare import idem_asset
from idem_platform.storage.elasticsearch_store import ElasticsearchPartitionIOManager
from idem_platform.storage.search_client import ElasticsearchResource, UnsupportedSearchCluster

DAY = "2026-01-05"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}


class ProductHeaderProxy:
    """An HTTP proxy in front of a search server that drops `X-Elastic-Product` (unless `keep_product`) and
    records every request as `(method, path)`."""

    def __init__(self, upstream_url: str, *, keep_product: bool = False):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port or 80)
        self.keep_product = keep_product
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.requests.append((self.command, self.path))
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers={
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP})
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    dropped = name.lower() == "x-elastic-product" and not proxy.keep_product
                    if name.lower() not in _HOP_BY_HOP and not dropped:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _proxy(es: ElasticsearchResource, keep_product: bool):
    url = es.resolved_url()
    if urlsplit(url).scheme != "http":
        pytest.skip("the header proxy speaks plain http; IDEM_ES_URL is https")
    proxy = ProductHeaderProxy(url, keep_product=keep_product)
    yield proxy
    proxy.close()


@pytest.fixture
def opensearch_like(es):
    """The session's real search server as OpenSearch shows itself to the client: no X-Elastic-Product header."""
    yield from _proxy(es, keep_product=False)


@pytest.fixture
def faithful(es):
    """The same proxy, keeping the header (the control)."""
    yield from _proxy(es, keep_product=True)


def through(proxy: ProductHeaderProxy, es: ElasticsearchResource) -> ElasticsearchResource:
    """The test's resource pointed at the proxy (credentials, if any, from the environment as before)."""
    return ElasticsearchResource(url=proxy.url, plain_json=es.plain_json)


def test_a_server_failing_the_product_check_is_refused_by_name(opensearch_like, es):
    client = through(opensearch_like, es).client()
    with pytest.raises(UnsupportedSearchCluster) as err:
        client.indices.exists(index="anything")
    message = str(err.value)
    upstream_info = es.client().info().body  # what the server itself says, straight
    for expected in (
        opensearch_like.url,
        f"distribution {upstream_info['version'].get('distribution')!r}",
        f"version {upstream_info['version']['number']!r}",
        repr(upstream_info["tagline"]),
        "X-Elastic-Product: Elasticsearch",
        "UnsupportedProductError",
        "Elasticsearch 8 and 9",
        "OpenSearch is not supported",
    ):
        assert expected in message, (expected, message)
    # The client's own product check raised it (kept, not bypassed), on GET / before the request itself.
    assert isinstance(err.value.__cause__, UnsupportedProductError)
    assert opensearch_like.requests == [("GET", "/")]
    # It stays refused: every later request fails the same way, and still sends nothing but GET /.
    with pytest.raises(UnsupportedSearchCluster):
        client.indices.create(index="never-created")
    assert {method for method, _ in opensearch_like.requests} == {"GET"}


def test_a_run_fails_at_first_use_and_writes_nothing(opensearch_like, es, postgres, store_resources,
                                                     search_asset_name):
    name = search_asset_name("compat")

    @idem_asset(columns={"person_id": "string", "city": "string"}, key=["person_id"], io_manager_key="search_io",
                name=name)
    def people(context: dg.AssetExecutionContext, day: str) -> pd.DataFrame:
        return pd.DataFrame({"person_id": ["p1", "p2"], "city": ["Lyon", "Oslo"]})

    search_io = ElasticsearchPartitionIOManager(postgres=postgres, es=through(opensearch_like, es))
    result = dg.materialize([people], partition_key=DAY, resources={**store_resources, "search_io": search_io},
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "UnsupportedSearchCluster" in str(failure.event_specific_data.error)
    assert "OpenSearch is not supported" in str(failure.event_specific_data.error)
    assert {method for method, _ in opensearch_like.requests} == {"GET"}, opensearch_like.requests

    straight = es.client()  # nothing of the asset reached the server: no index, no template
    assert straight.indices.get(index=f"{name}*", allow_no_indices=True, expand_wildcards="all").body == {}
    assert not straight.indices.exists_index_template(name=f"idem-{name}")


def test_the_same_proxy_keeping_the_header_works_and_checks_once(faithful, es, search_asset_name):
    index = f"{search_asset_name('compat')}-1"  # deleted after the test on a shared cluster
    client = through(faithful, es).client()
    client.indices.create(index=index)
    helpers.bulk(client, ({"_index": index, "_id": str(i), "n": i} for i in range(50)), refresh=True)
    assert client.count(index=index).body["count"] == 50
    # One GET / for the client and its options() copies (helpers.bulk makes one), not one per copy.
    assert faithful.requests.count(("GET", "/")) == 1, faithful.requests
