"""What the API's rate limit costs a request (issue 17): in memory no thread per hit, with
Redis at most one round trip (one pipeline), whatever the number of windows, and only when a
lease of the shared counter is used up (tests/test_rate_limit_leases.py)."""

from __future__ import annotations

import threading

import pytest
from api_support import API, bearer

from services.rate_limits import rate_limits


@pytest.fixture
def app_config(limit_storage):
    return limit_storage


def test_a_request_costs_one_round_trip_and_no_thread(app, client, make_org, make_token, db):
    token, secret = make_token(make_org())
    token.rate_limit = "1000/minute;100/second;5000/hour"  # three windows
    db.session.commit()
    assert client.get(f"{API}/whoami", headers=bearer(secret)).status_code == 200  # warm

    limits = rate_limits(app)
    trips: list[str] = []
    if limits.redis is not None:
        pipeline, execute_command = limits.redis.pipeline, limits.redis.execute_command

        def counted_pipeline(*args, **kwargs):
            trips.append("pipeline")
            return pipeline(*args, **kwargs)

        def counted_command(*args, **kwargs):
            trips.append(str(args[0]))
            return execute_command(*args, **kwargs)

        limits.redis.pipeline, limits.redis.execute_command = counted_pipeline, counted_command
    threads = threading.active_count()

    answers = [client.get(f"{API}/whoami", headers=bearer(secret)) for _ in range(50)]

    assert [a.status_code for a in answers] == [200] * 50
    assert answers[-1].headers["X-RateLimit-Limit"] == "100"  # the shortest window shown
    assert int(answers[-1].headers["X-RateLimit-Remaining"]) < 100
    assert threading.active_count() <= threads  # no timer thread per hit
    if limits.redis is None:
        assert trips == []
    else:
        # Leases of 5 of the 100/second window: 10 claims, and one more at each new second.
        assert set(trips) == {"pipeline"} and 10 <= len(trips) <= 20, trips
