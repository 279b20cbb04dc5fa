"""The drain sequence as logic: wait for in-flight work, cut what outlasts the deadline, exit."""

from __future__ import annotations

import asyncio

from server.runtime.drain import Drain, run_drain


async def test_an_idle_server_exits_at_once_without_stopping_generations() -> None:
    drain = Drain(timeout_s=30)
    calls: list[str] = []

    async def stop() -> None:
        calls.append("stop")

    await asyncio.wait_for(
        run_drain(drain, stop_generations=stop, exit_server=lambda: calls.append("exit")), 1
    )
    assert drain.draining and not drain.deadline_passed
    assert calls == ["exit"]


async def test_requests_in_flight_are_awaited_then_the_server_exits() -> None:
    drain = Drain(timeout_s=30)
    calls: list[str] = []

    async def request(seconds: float) -> None:
        with drain.track():
            await asyncio.sleep(seconds)
        calls.append(f"done {seconds}")

    async def stop() -> None:
        calls.append("stop")

    work = [asyncio.create_task(request(s)) for s in (0.05, 0.15)]
    await asyncio.sleep(0)
    await run_drain(drain, stop_generations=stop, exit_server=lambda: calls.append("exit"))
    await asyncio.gather(*work)
    assert calls == ["done 0.05", "done 0.15", "exit"]
    assert drain.in_flight == 0


async def test_at_the_deadline_generations_are_stopped_before_the_exit() -> None:
    drain = Drain(timeout_s=0.1)
    calls: list[str] = []
    release = asyncio.Event()

    async def request() -> None:
        with drain.track():
            await release.wait()  # a stream that would outlive the drain

    async def stop() -> None:
        calls.append("stop")
        release.set()  # closing the engine ends the stream with an error event

    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    await run_drain(drain, stop_generations=stop, exit_server=lambda: calls.append("exit"))
    await task
    assert drain.deadline_passed
    assert calls == ["stop", "exit"]


async def test_a_second_drain_request_is_ignored() -> None:
    drain = Drain(timeout_s=1)
    exits: list[int] = []

    async def stop() -> None:
        pass

    await run_drain(drain, stop_generations=stop, exit_server=lambda: exits.append(1))
    await run_drain(drain, stop_generations=stop, exit_server=lambda: exits.append(1))
    assert exits == [1]
