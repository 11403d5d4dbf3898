"""Expected library messages are dropped at their logger; the rest still gets through."""

from __future__ import annotations

import logging

from vidablate.sweep import quiet


def test_filters_drop_only_the_expected_messages(caplog):
    quiet.install()
    quiet.install()  # idempotent
    tune = logging.getLogger("ray.tune.utils.util")
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    assert tune.filters.count(quiet.FILTERS["ray.tune.utils.util"]) == 1
    with caplog.at_level(logging.WARNING):
        tune.warning("The `callbacks.on_trial_result` operation took 1.654 s, which may be a "
                     "performance bottleneck.")
        tune.warning("The `process_trial_result` operation took 12.5 s, which may be a "
                     "performance bottleneck.")
        tune.warning("something else entirely")
        auth.warning("Token authentication is enabled for this Ray cluster. Set ...")
        auth.warning("token file unreadable")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("took 1.654 s" in m for m in messages)
    assert any("took 12.5 s" in m for m in messages)  # a slow call is still shown
    assert "something else entirely" in messages and "token file unreadable" in messages
    assert not any("Token authentication is enabled" in m for m in messages)
