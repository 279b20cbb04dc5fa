"""Champion/challenger on the real server, with simulated users who rate what they read.

The base SmolLM2 is registry v1; two GGUF LoRAs over it are adapter versions: ``fixed``
(users want its answer) and ``broken`` (a LoRA strong enough to garble the model). The server
starts on v1 with no adapter; both are loaded through the admin API (no restart). Users ask
the same question under their own ``user`` ids and send 👍 when the answer is the one they
want, 👎 otherwise — they never look at which variant answered.

1. ``fixed`` challenges the base: users prefer it, the rollout promotes it by itself, and
   from then on every request for the model gets it.
2. ``broken`` challenges ``fixed``: users dislike it, the rollout rolls it back by itself.

Not one request fails during either, every user stays on one arm for a whole rollout, and
both decisions are in the registry with their figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from artifacts.digest import sha256_file
from artifacts.registry import ModelRegistry
from server.feedback.store import FeedbackStore
from tests.integration.server_proc import MODEL, ROOT, ServerHandle, running_server
from tests.integration.test_engine import write_lora

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# Small samples with large effects: the users' preference is all-or-nothing here, so the
# test's policy decides within a few dozen requests per arm; TTFT may double (adapters take
# turns with the base in a batch) before a challenger counts as slow.
POLICY = {
    "min_samples": 20,
    "ttft_warmup": 20,
    "tau": 0.5,
    "error_margin": 0.1,
    "slow_margin": 0.3,
    "ttft_tolerance": 1.0,
    "max_samples": 400,
}
USERS = 40
BUDGET = 900  # requests per rollout before the test gives up


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rollout")
    path = folder / "registry.json"
    store = ModelRegistry(path)
    base = store.register(MODEL, sha256_file(MODEL), name="smollm2")
    store.promote(base.version, by="test")
    for name, rank, scale_b in (("fixed", 4, 0.5), ("broken", 8, 6.0)):
        lora = write_lora(folder / f"{name}.gguf", rank=rank, scale_b=scale_b)
        args = ("models", "register", str(lora), "--base", str(MODEL), "--name", name)
        registered = cli(*args, "--registry", str(path))
        assert registered.returncode == 0, registered.stderr
    assert [(v.version, v.kind) for v in store.read().versions] == [
        (1, "model"),
        (2, "adapter"),
        (3, "adapter"),
    ]
    return path


@pytest.fixture(scope="module")
def server(registry: Path) -> Iterator[ServerHandle]:
    env = {
        "GGSERVE_REGISTRY_PATH": str(registry),
        "GGSERVE_ADMIN_KEY_IDS": "test",
        "GGSERVE_SPECULATIVE": "off",  # greedy answers users compare, bit for bit
        "GGSERVE_FEEDBACK_DB": str(registry.parent / "feedback.db"),
    }
    with running_server(env=env) as handle:
        yield handle


def ask(
    server: ServerHandle, client: httpx.Client, user: str | None, model: str = "smollm2"
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": model,
        "messages": QUESTION,
        "max_tokens": 12,
        "temperature": 0,
    }
    if user is not None:
        body["user"] = user
    return client.post(server.url + "/v1/chat/completions", json=body, headers=server.headers)


def cli(*args: str, server: ServerHandle | None = None) -> subprocess.CompletedProcess[str]:
    """``ggserve ARGS`` (against ``server`` with its admin key, when given)."""
    env = {**os.environ, "COLUMNS": "200"}
    if server is not None:
        env |= {"GGSERVE_URL": server.url, "GGSERVE_API_KEY": server.api_key or ""}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def admin(server: ServerHandle, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, server.url + path, headers=server.headers, timeout=60, **kwargs)


def answer_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


@dataclass
class Users:
    """Users who want ``wanted`` and rate every answer; what they saw, per user."""

    server: ServerHandle
    wanted: str
    failures: list[str] = field(default_factory=list)
    variants: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    answered: dict[str, str] = field(default_factory=dict)  # variant -> a response id
    requests: int = 0

    def one(self, client: httpx.Client, user: str) -> None:
        response = ask(self.server, client, user)
        self.requests += 1
        if response.status_code != 200:
            self.failures.append(f"{response.status_code} {response.text[:200]}")
            return
        variant = response.headers.get("x-ggserve-variant", "-")
        self.variants[user].add(variant)
        self.answered[variant] = response.json()["id"]
        rating = 1 if answer_of(response) == self.wanted else -1
        feedback = client.post(
            self.server.url + "/v1/feedback",
            json={"response_id": response.json()["id"], "rating": rating},
            headers=self.server.headers,
        )
        if feedback.status_code not in (200, 201):
            self.failures.append(f"feedback {feedback.status_code} {feedback.text[:200]}")

    def until_decided(self) -> dict[str, Any]:
        """Users keep coming (4 at a time) until the rollout ends; its final summary."""

        def user_loop(worker: int) -> None:
            with httpx.Client(timeout=60) as client:
                turn = worker
                while self.requests < BUDGET and not self.failures:
                    if admin(self.server, "GET", "/admin/rollout").json()["status"] != "running":
                        return
                    self.one(client, f"user-{turn % USERS}")
                    turn += 4

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(user_loop, range(4)))
        return admin(self.server, "GET", "/admin/rollout").json()


def registry_rollouts(registry: Path, count: int) -> dict[str, Any]:
    """The registry file once it holds ``count`` decisions (written off the event loop)."""
    deadline = time.monotonic() + 10
    while True:
        data = json.loads(registry.read_text())
        if len(data.get("rollouts", [])) >= count or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def test_a_preferred_challenger_is_promoted_and_a_broken_one_rolled_back(
    server: ServerHandle, registry: Path
) -> None:
    with httpx.Client(timeout=60) as client:
        base_answer = answer_of(ask(server, client, None))
        loaded = admin(server, "POST", "/admin/adapters", json={"version": 2})
        assert loaded.status_code == 201, loaded.text
        assert loaded.json()["name"] == "fixed"
        wanted = answer_of(ask(server, client, None, model="fixed"))  # no restart needed
        assert wanted != base_answer

        started = admin(
            server,
            "POST",
            "/admin/rollout",
            json={"challenger": "fixed", "share": 0.5, "policy": POLICY},
        )
        assert started.status_code == 201, started.text
        assert started.json()["champion"] == {"adapter": "", "version": None}
        assert started.json()["challenger"] == {"adapter": "fixed", "version": 2}
        users = Users(server, wanted)
        first = users.until_decided()
        assert users.failures == []
        assert first["status"] == "promoted", first
        assert all(len(seen) == 1 for seen in users.variants.values()), users.variants
        assert {v for seen in users.variants.values() for v in seen} == {"champion", "challenger"}
        captured = FeedbackStore(registry.parent / "feedback.db", create=False)
        for variant, adapter in (("challenger", "+fixed"), ("champion", "")):
            record = captured.get_interaction(users.answered[variant])
            assert record is not None and record.variant == f"{first['id']}:{variant}"
            assert record.model.name == "v1" + adapter
        promoted = ask(server, client, "someone-new")
        assert answer_of(promoted) == wanted  # the model's requests now get the adapter
        assert "x-ggserve-variant" not in promoted.headers

        # The second one through the CLI: load registry v3 as the challenger and start.
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in POLICY.items()]
        second = cli("rollout", "start", "broken", "--version", "3", *flags, server=server)
        assert second.returncode == 0, second.stderr
        assert "broken challenges fixed on 50% of traffic" in second.stdout
        users = Users(server, wanted)
        rolled = users.until_decided()
        assert users.failures == []
        assert rolled["status"] == "rolled_back", rolled
        assert rolled["champion"] == {"adapter": "fixed", "version": 2}
        assert "👎 share is worse" in rolled["reason"]
        status = cli("rollout", "status", server=server)
        assert status.returncode == 0 and "rolled_back" in status.stdout, status.stderr
        assert "thumbs_down" in status.stdout and "challenger" in status.stdout
        assert answer_of(ask(server, client, "someone-else")) == wanted

    data = registry_rollouts(registry, 2)
    assert [r["status"] for r in data["rollouts"]] == ["promoted", "rolled_back"]
    assert data["default_adapter"] == 2
    assert data["rollouts"][0]["arms"]["challenger"]["rated"] > 0
    assert data["rollouts"][0]["intervals"]["thumbs_down"]["high"] < 0
    assert data["history"][-1]["version"] == 2 and data["history"][-1]["by"].startswith("rollout")
    metrics = httpx.get(server.url + "/metrics").text
    assert 'ggserve_rollout_decisions_total{status="promoted"} 1.0' in metrics
    assert 'ggserve_rollout_decisions_total{status="rolled_back"} 1.0' in metrics
    log = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    ended = [line for line in log if line.get("event") == "rollout_ended"]
    assert [line["status"] for line in ended] == ["promoted", "rolled_back"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"challenger": "nope"}, "challenger"),
        ({"challenger": ""}, "challenger"),
        ({"challenger": 7}, "challenger"),
        ({"challenger": "fixed", "share": 0}, "share"),
        ({"challenger": "fixed", "share": 1.5}, "share"),
        ({"challenger": "fixed", "share": "half"}, "share"),
        ({"challenger": "fixed", "sticky": "ip"}, "sticky"),
        ({"challenger": "fixed", "policy": {"alpha": 0}}, "policy.alpha"),
        ({"challenger": "fixed", "policy": {"min_samples": 10, "max_samples": 6}}, "policy"),
        ({"challenger": "fixed", "policy": {"guess": 1}}, "policy.guess"),
        ({"challenger": "fixed", "extra": True}, "extra"),
    ],
)
def test_a_bad_rollout_request_is_a_400_naming_the_field(
    server: ServerHandle, body: dict[str, Any], param: str
) -> None:
    response = admin(server, "POST", "/admin/rollout", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"version": 1}, 400, "version"),  # a whole model
        ({"version": 99}, 404, "version"),
        ({"version": "2"}, 400, "version"),
        ({"version": 2, "name": "../x"}, 400, "name"),
        ({"version": 2, "name": "SERVED"}, 400, "name"),  # the served model's own id
        ({"version": 2, "name": "a" * 65}, 400, "name"),
        ({"version": 2, "scale": 9}, 400, "scale"),
    ],
)
def test_a_bad_adapter_load_is_refused_naming_the_field(
    server: ServerHandle, body: dict[str, Any], status: int, param: str
) -> None:
    if body.get("name") == "SERVED":
        models = httpx.get(server.url + "/v1/models", headers=server.headers).json()["data"]
        body = {**body, "name": models[0]["id"]}
    response = admin(server, "POST", "/admin/adapters", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_adapters_in_use_cannot_be_unloaded_and_others_can(server: ServerHandle) -> None:
    listed = admin(server, "GET", "/admin/adapters").json()
    default = [a["name"] for a in listed if a["default"]]
    if default:  # after the rollouts above: the promoted adapter serves every request
        refused = admin(server, "DELETE", f"/admin/adapters/{default[0]}")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "adapter_in_use"
    assert admin(server, "DELETE", "/admin/adapters/never-loaded").status_code == 404
    extra = admin(server, "POST", "/admin/adapters", json={"version": 3, "name": "spare"})
    assert extra.status_code == 201, extra.text
    assert admin(server, "DELETE", "/admin/adapters/spare").status_code == 200
    assert "spare" not in [a["name"] for a in admin(server, "GET", "/admin/adapters").json()]


def test_rollout_and_adapter_admin_need_an_admin_key(server: ServerHandle) -> None:
    paths = ("/admin/rollout", "/admin/adapters")
    for method, path in [("GET", p) for p in paths] + [("DELETE", "/admin/adapters/fixed")]:
        assert httpx.request(method, server.url + path).status_code == 401
    stop = admin(server, "DELETE", "/admin/rollout")
    assert stop.status_code == 409  # none running
