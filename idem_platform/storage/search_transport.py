"""The `elasticsearch` client as the platform uses it: a plain-JSON transport node and the product check turned
into `UnsupportedSearchCluster`. Imported by `ElasticsearchResource.client()` at first use (not at import of the
platform: loading the client library costs a run that writes no search sink ~0.15 s)."""

from __future__ import annotations

import re

from elastic_transport import Urllib3HttpNode
from elasticsearch import ApiError, Elasticsearch, UnsupportedProductError

from .search_support import UnsupportedSearchCluster, refusal_message

_COMPAT_MEDIA_TYPE = re.compile(r"application/vnd\.elasticsearch\+([\w.+-]+)\s*;\s*compatible-with=\d+", re.I)
_MEDIA_HEADERS = ("accept", "content-type")


class PlainJsonHttpNode(Urllib3HttpNode):
    """An urllib3 node that sends plain `application/json` / `application/x-ndjson` media types.

    The 9.x `elasticsearch` client asks for REST API compatibility mode on every request:
    `Accept`/`Content-Type: application/vnd.elasticsearch+json; compatible-with=9` (`+x-ndjson` for bulk).
    OpenSearch and OpenSearch-compatible servers (the local osmem server among them) answer that with 406, and
    Elasticsearch 8 with 400 (`Accept version must be either version 8 or 7`). This node rewrites both headers,
    always together (Elasticsearch refuses a compatible version on one header but not the other), to the plain
    media types every Elasticsearch and OpenSearch version accepts. Pass it as `Elasticsearch(node_class=...)`.
    """

    def perform_request(self, method, target, body=None, headers=None, **kwargs):
        if headers:
            headers = headers.copy()
            for name in _MEDIA_HEADERS:
                value = headers.get(name)
                if value:
                    headers[name] = _COMPAT_MEDIA_TYPE.sub(r"application/\1", value)
        return super().perform_request(method, target, body=body, headers=headers, **kwargs)



class _ProductCheck:
    """Shared by a client and its `options()` copies, so the `GET /` check runs once per `client()`."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class CheckedElasticsearch(Elasticsearch):
    """The `elasticsearch` client, whose product check runs first, on a read-only `GET /`, and fails by name.

    The client checks `X-Elastic-Product: Elasticsearch` on the first successful response of whatever request comes
    first, so against a server that fails it, a write would land and then raise a bare `UnsupportedProductError`
    deep in a run. Here the first request of a client (and of its `options()` copies) is preceded by `GET /`
    through the client itself, product check included; a failed check raises `UnsupportedSearchCluster` naming the
    URL, `version.distribution`, `version.number` and `tagline`, before anything is written. The check is not
    bypassed: if `GET /` is refused (an API key without the `monitor` privilege answers 403), the client's own check
    still runs on the first successful response, and a failure there is reported the same way.
    """

    _idem_check: _ProductCheck | None = None

    def _product_check(self) -> _ProductCheck:
        if self._idem_check is None:
            self._idem_check = _ProductCheck()
        return self._idem_check

    def options(self, *args, **kwargs):
        client = super().options(*args, **kwargs)
        client._idem_check = self._product_check()
        return client

    def perform_request(self, method, path, **kwargs):
        check = self._product_check()
        try:
            if not check.done:
                try:
                    super().perform_request("GET", "/", headers={"accept": "application/json"},
                                            endpoint_id="info", path_parts={})
                except UnsupportedProductError:
                    raise
                except ApiError:
                    pass  # GET / refused (403, ...): the client checks the request's own response instead
                check.done = True
            return super().perform_request(method, path, **kwargs)
        except UnsupportedProductError as exc:
            raise UnsupportedSearchCluster(refusal_message(self._urls(), exc.body)) from exc

    def _urls(self) -> str:
        return ", ".join(node.base_url for node in self.transport.node_pool.all()) or "(no node)"
