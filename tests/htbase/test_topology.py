"""The registry is the one topic map: every route is served, named once, and deployable."""

from __future__ import annotations

import functions.main
from htbase.config import Settings
from htbase.messages import ARCHIVERS
from htbase.topology import DEAD_LETTER, HOUSEKEEPING, PUSH_SERVICES, ROUTES, archive_topic, route, topic_name


def test_every_archiver_has_a_route_and_topics_services_and_targets_are_unique():
    assert {r.archiver for r in ROUTES if r.archiver} == set(ARCHIVERS)
    for field in ("topic", "service", "target"):
        values = [getattr(r, field) for r in ROUTES]
        assert len(values) == len(set(values)), field
    assert len(PUSH_SERVICES) == len(ROUTES)


def test_every_target_exists_in_the_functions_framework_module():
    for r in (*ROUTES, HOUSEKEEPING):
        assert callable(getattr(functions.main, r.target)), r.target


def test_only_the_dead_letter_subscription_is_not_dead_lettered():
    assert [r.topic for r in ROUTES if not r.dead_lettered] == [DEAD_LETTER]


def test_each_service_env_makes_valid_settings_for_its_role():
    shared = {"BROKER": "pubsub", "DATABASE_URL": "postgresql+pg8000://htbase@db/htbase"}  # what every role needs
    for r in ROUTES:
        settings = Settings.from_env({**shared, **r.service_env})
        assert settings.service_role == r.role
        if r.archiver:
            assert settings.archivers == (r.archiver,)


def test_real_topic_names_carry_the_prefix():
    assert topic_name("htbase-", "pdf") == "htbase-archive-pdf"
    assert topic_name("x-", DEAD_LETTER) == "x-dead-letter"
    assert route(archive_topic("pdf")).service == "archiver-pdf"
