"""The ``talicada`` command: help, and clear refusals of unusable settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def talicada(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALICADA_")}
    return subprocess.run(
        [sys.executable, "-m", "talicada", *args],
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("command", [[], ["serve"], ["worker"], ["events", "tail"], ["openapi"]])
def test_every_command_explains_itself(command: list[str]) -> None:
    result = talicada(*command, "--help")
    assert result.returncode == 0
    assert "usage: talicada" in result.stdout


def test_serve_with_redis_but_no_token_file_refuses_to_start(redis_url: str) -> None:
    result = talicada("serve", TALICADA_REDIS_URL=redis_url, TALICADA_CALLBACK_SECRET="x" * 32)
    assert result.returncode == 2
    assert "auth_tokens_file" in result.stderr


def test_a_malformed_setting_is_named(redis_url: str) -> None:
    result = talicada("serve", TALICADA_PORT="eighty")
    assert result.returncode == 2
    assert "port" in result.stderr


def test_a_worker_without_a_broker_url_says_which_setting_is_missing(redis_url: str) -> None:
    result = talicada("worker", "launch", TALICADA_REDIS_URL=redis_url)
    assert result.returncode == 2
    assert "broker_url" in result.stderr
