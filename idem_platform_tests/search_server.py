"""pytest plugin: a real HTTP search server for the Elasticsearch sink tests (never a mock).

Server choice: `IDEM_ES_URL` when set (a real Elasticsearch cluster; `IDEM_ES_PLAIN_JSON` and the credential
variables as `ElasticsearchResource` reads them), else one local osmem server (the in-memory
OpenSearch-compatible server of the `osmem-server` wheel) started for the session, with a fresh clone of its
empty base per test. Either way each test names its assets with `search_asset_name`, so tests never share an
index, and on a shared cluster everything a test created under those names is deleted afterwards.

Load it with `pytest_plugins = ["idem_platform_tests.search_server"]` in conftest.py, or
`pytest -p idem_platform_tests.search_server`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from idem_platform.storage.search_client import ElasticsearchResource


def external_search_url() -> str | None:
    return os.environ.get("IDEM_ES_URL") or None


@pytest.fixture(scope="session")
def search_base_server() -> Iterator[object | None]:
    """The session's osmem server, or None when IDEM_ES_URL names a cluster."""
    if external_search_url():
        yield None
        return
    from osmem_server import OsmemServer

    # Not frozen: clones are the isolation; no Japanese analysis: nothing here needs it and it starts faster.
    server = OsmemServer.start(freeze=False, japanese=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def es(search_base_server) -> Iterator[ElasticsearchResource]:
    """An ElasticsearchResource for this test: IDEM_ES_URL's cluster, or a fresh osmem clone (plain JSON)."""
    if search_base_server is None:
        yield ElasticsearchResource()
        return
    clone = search_base_server.clone()
    try:
        yield ElasticsearchResource(url=clone.url, plain_json=True)
    finally:
        clone.close()


@pytest.fixture
def search_asset_name(es) -> Iterator[Callable[[str], str]]:
    """Factory of unique, index-safe asset names; their indices and templates are deleted after the test."""
    names: list[str] = []

    def make(prefix: str = "people_search") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        names.append(name)
        return name

    yield make
    if not external_search_url() or not names:
        return  # a clone disappears with its data
    delete_asset_indices(es, names)


def delete_asset_indices(es: ElasticsearchResource, names: list[str]) -> None:
    """Delete every index and the template of these assets (cleanup on a shared cluster)."""
    client = es.client()
    try:
        for name in names:
            found = client.indices.get_alias(index=f"{name}-*", expand_wildcards="open,closed").body
            for index in found:
                client.indices.delete(index=index, ignore_unavailable=True)
            if client.indices.exists_index_template(name=f"idem-{name}"):
                client.indices.delete_index_template(name=f"idem-{name}")
    finally:
        client.close()


def pytest_report_header(config):
    where = f"IDEM_ES_URL ({'plain JSON' if os.environ.get('IDEM_ES_PLAIN_JSON', 'true').lower() not in ('0', 'false', 'no', 'off') else 'compatibility media types'})"
    return f"search sink tests run against {where if external_search_url() else 'a local osmem server'}"
