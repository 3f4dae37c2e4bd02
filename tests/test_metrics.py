"""Prometheus metrics: open to scrapers, counting what happened."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ClientFactory
from tests.lifecycle_support import task


def sample(text: str, name: str) -> float:
    """The value of one sample line (``name`` includes its labels)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} in:\n{text}")


async def test_metrics_count_requests_offers_and_streams(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("a-token-of-sixteen-chars alice\n")
    client = await make_client(auth_tokens_file=str(tokens))
    headers = {"Authorization": "Bearer a-token-of-sixteen-chars"}
    for _ in range(2):
        response = await client.post("/requests", json=task("ping"), headers=headers)
        assert response.status == 200
    await client.post("/requests", json={"executable": {}}, headers=headers)
    # Scrapers need no token
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert sample(text, 'talicada_offersets_total{result="YES"}') == 2
    requests = 'talicada_http_requests_total{method="POST",route="/requests",status="200"}'
    assert sample(text, requests) == 2
    invalid = 'talicada_http_requests_total{method="POST",route="/requests",status="400"}'
    assert sample(text, invalid) == 1
    # every offer was announced on the lifecycle stream (4 offers per set)
    assert sample(text, 'talicada_stream_length{stream="lifecycle"}') == 8
    assert sample(text, "talicada_dead_letters") == 0
