"""Which search clusters the platform supports, and the error that refuses the others (README, "Search cluster
compatibility"). Apart from the client (`search_transport`), so the error can be imported, caught and named in the
public API without loading the client library."""

from __future__ import annotations

from typing import Any


SUPPORTED_CLUSTERS = (
    "Elasticsearch 8 and 9 through the plain-JSON transport (IDEM_ES_PLAIN_JSON=true, the default; not run in CI), "
    "and the osmem in-memory server that `idem up` starts (the only server CI runs); OpenSearch is not supported"
)


class UnsupportedSearchCluster(RuntimeError):
    """The cluster fails the `elasticsearch` client's product check (it is not Elasticsearch, e.g. OpenSearch).

    Not an `ApiError`: no retry or read-back path of the sink mistakes it for a failed request. Its `__cause__` is the
    client's `UnsupportedProductError`.
    """


def refusal_message(url: str, answer: Any) -> str:
    """What the platform says about a server that fails the product check; `answer` is the response body."""
    version = answer.get("version") if isinstance(answer, dict) else None
    if isinstance(version, dict):
        says = (f"it says it is distribution {version.get('distribution')!r}, "
                f"version {version.get('number')!r}, tagline {answer.get('tagline')!r} (GET /)")
    else:
        says = f"it did not say what it is (GET / refused or not JSON); it answered {str(answer)[:200]!r}"
    return (
        f"the search cluster at {url} is not supported: it does not send the `X-Elastic-Product: Elasticsearch` "
        f"response header, so the `elasticsearch` client this platform uses refuses it (UnsupportedProductError, "
        f"its product check); {says}. Supported: {SUPPORTED_CLUSTERS}. Set IDEM_ES_URL to an Elasticsearch "
        f"cluster (README, \"Search cluster compatibility\")."
    )
