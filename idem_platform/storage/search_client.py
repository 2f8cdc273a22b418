"""The search cluster: the `elasticsearch` 9 client, its plain-JSON transport (Elasticsearch 8, the osmem server),
and the resource that finds the cluster. The client library itself (`search_transport`) is imported when a client
is first made, so a run that writes no search sink does not load it.

Compatibility (README "Search cluster compatibility"): the client is the official `elasticsearch` 9 client with its
product check kept. A server that fails it (real OpenSearch does: it sends no `X-Elastic-Product: Elasticsearch`
header) is refused with `UnsupportedSearchCluster` on the client's first request, a read-only `GET /`, before
anything is written; the message names the URL, what the server says it is and what is supported.

`ElasticsearchResource()` left unconfigured finds its cluster **when it is used**, from `idem_platform.settings`:
`IDEM_ES_URL`, else the local server `idem up` started (its URL in `<state dir>/search.url`), else it fails
naming both. Credentials likewise: `IDEM_ES_API_KEY` or `IDEM_ES_USERNAME` + `IDEM_ES_PASSWORD`, read at use, so
neither the UI nor the run config ever holds them.
"""

from __future__ import annotations

import urllib.request
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from .. import settings
from ..resources import ServiceNotFound, _resolved
from .search_support import UnsupportedSearchCluster  # noqa: F401 - public: idem_platform.UnsupportedSearchCluster

if TYPE_CHECKING:
    from .search_transport import CheckedElasticsearch


class ElasticsearchResource(dg.ConfigurableResource):
    """An Elasticsearch cluster (or the osmem in-memory server) reached over HTTP with the official 9.x client.

    Credentials: `api_key`, or `username` + `password`, normally `dg.EnvVar`s so the UI shows their names only;
    they are left out of this resource's repr and never logged (the transport hides the Authorization header).
    Put them there, not in `url`.

    `plain_json` (default True) sends plain `application/json` / `application/x-ndjson` instead of the client's
    `application/vnd.elasticsearch+json; compatible-with=9` (see `PlainJsonHttpNode`):

    - required for the local osmem server (as for OpenSearch-API servers generally), which rejects the
      compatibility media types with 406;
    - harmless against Elasticsearch 9: plain JSON *is* the 9.x API, the same requests and responses;
    - needed against Elasticsearch 8, which refuses `compatible-with=9` with 400; plain JSON gets the 8.x API,
      which covers everything this platform calls (index templates, bulk, aliases, count, scroll);
    - turn it off only against a newer major (Elasticsearch 10+), where `compatible-with=9` asks the server to
      answer in the 9.x format this client understands.

    Real OpenSearch does not send the `X-Elastic-Product: Elasticsearch` response header that the client
    checks (its product check); plain JSON does not change that. `client()` keeps the check and runs it first
    (`CheckedElasticsearch`): such a cluster fails with `UnsupportedSearchCluster` before anything is written.
    osmem sends the header.

    Requests are retried up to 3 times on connection errors; bulk documents have deterministic ids, so a
    retried chunk overwrites what it already wrote.
    """

    url: str = Field(default="", description="Base URL, e.g. https://search.internal:9200 (no credentials in it); "
                     "empty: IDEM_ES_URL, else the local server of `idem up`")
    api_key: str | None = Field(default=None, repr=False, description="API key (base64 `id:key` or encoded)")
    username: str | None = Field(default=None, repr=False, description="Basic-auth user (with password)")
    password: str | None = Field(default=None, repr=False, description="Basic-auth password")
    request_timeout: float = Field(default=30.0, description="Seconds per HTTP request")
    plain_json: bool | None = Field(default=None, description="Send plain application/json (see class docstring); "
                                    "empty: IDEM_ES_PLAIN_JSON (default true)")
    ca_certs: str | None = Field(default=None, description="CA bundle for a cluster with its own certificate")

    def client(self) -> CheckedElasticsearch:
        from .search_transport import CheckedElasticsearch, PlainJsonHttpNode  # the client library, at first use

        api_key, username, password = _resolved(self.api_key), _resolved(self.username), _resolved(self.password)
        if not (api_key or username or password):
            api_key = settings.raw("IDEM_ES_API_KEY") or None
            username = settings.raw("IDEM_ES_USERNAME") or None
            password = settings.raw("IDEM_ES_PASSWORD") or None
        if api_key and (username or password):
            raise ValueError("give the Elasticsearch resource an api_key or username/password, not both")
        if bool(username) != bool(password):
            raise ValueError("Elasticsearch basic auth needs both username and password")
        kwargs: dict[str, Any] = {"request_timeout": self.request_timeout, "max_retries": 3}
        if api_key:
            kwargs["api_key"] = api_key
        if username:
            kwargs["basic_auth"] = (username, password)
        if self.plain_json if self.plain_json is not None else settings.current().es_plain_json:
            kwargs["node_class"] = PlainJsonHttpNode
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        return CheckedElasticsearch(self.resolved_url(), **kwargs)

    def resolved_url(self) -> str:
        return _resolved(self.url) or cluster_url()


def search_answers(url: str) -> bool:
    """Whether a search server answers at `url` (2 s at most)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def cluster_url() -> str:
    """`IDEM_ES_URL`, else the local server `idem up` started under the state directory (if it still answers)."""
    current = settings.current()
    if current.es_url:
        return current.es_url
    local = current.local_search_url()
    if local and search_answers(local):
        return local
    where = f"the local server recorded in {current.search_url_file} does not answer at {local}" if local else (
        f"no local search server was started under {current.state_dir}")
    raise ServiceNotFound(
        f"no search cluster: IDEM_ES_URL is not set and {where}; run `idem up` (it prints the IDEM_ES_URL and "
        "IDEM_STATE_DIR to export in other shells) or set IDEM_ES_URL"
    )
