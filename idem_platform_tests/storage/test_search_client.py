"""The search cluster is found the same way by every process, or the failure says how to fix it."""

import pytest

from idem_platform import ElasticsearchResource, ServiceNotFound


@pytest.fixture
def no_configuration(monkeypatch, tmp_path):
    for name in ("IDEM_ES_URL", "IDEM_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "project"
    (project / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(project / "src" / "deep")
    return project


def test_no_cluster_names_idem_up_and_the_variable(no_configuration):
    with pytest.raises(ServiceNotFound) as err:
        ElasticsearchResource().client()
    assert "idem up" in str(err.value) and "IDEM_ES_URL" in str(err.value)


def test_a_dead_local_server_is_named(no_configuration):
    state = no_configuration / ".idem"
    state.mkdir()
    (state / "search.url").write_text("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(ServiceNotFound, match=r"does not answer at http://127.0.0.1:9.*idem up"):
        ElasticsearchResource().client()


def test_the_local_server_of_the_project_is_found_from_a_subdirectory(no_configuration, es):
    state = no_configuration / ".idem"
    state.mkdir()
    (state / "search.url").write_text(es.url)
    client = ElasticsearchResource().client()
    assert client.info().body  # the server `idem up` started at the project's root answers
