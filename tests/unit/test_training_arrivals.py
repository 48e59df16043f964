"""A run waiting for fresh data hears of every version sealed, even one sealed while it was looking."""

from __future__ import annotations

import asyncio

from flywheel.training.arrivals import Arrivals


async def test_an_announcement_made_while_the_waiter_looked_at_the_data_is_not_missed():
    arrivals = Arrivals()
    heard = arrivals.heard["loans"]  # read before looking at the store
    arrivals.announce("loans")  # a version sealed during the look
    assert await arrivals.next("loans", timeout_s=0.01, since=heard)


async def test_a_waiter_wakes_on_the_next_announcement_and_times_out_without_one():
    arrivals = Arrivals()
    waiting = asyncio.create_task(arrivals.next("loans", timeout_s=5, since=arrivals.heard["loans"]))
    await asyncio.sleep(0)
    arrivals.announce("bikeshare")  # another dataset's wakes nobody waiting for loans
    arrivals.announce("loans")
    assert await waiting
    assert not await arrivals.next("loans", timeout_s=0.01, since=arrivals.heard["loans"])
