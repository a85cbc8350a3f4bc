"""Every exception class stormeye defines has one root, StormeyeError, carrying its HTTP status; the
API answers any of them in one handler with that status and ``{"detail": message}``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from fastapi import APIRouter
from fastapi.testclient import TestClient

from stormeye.core.errors import BadInput, StormeyeError


def _modules() -> list[str]:
    names = []
    for top in ("core", "detectors", "grouping", "workers", "api"):
        pkg = importlib.import_module(f"stormeye.{top}")
        names.append(pkg.__name__)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}."):
            if ".migrations" not in info.name:
                names.append(info.name)
    return names


def test_every_exception_class_of_stormeye_derives_from_the_one_root() -> None:
    own = set()
    for name in _modules():
        mod = importlib.import_module(name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                own.add(cls)
    assert len(own) >= 25, sorted(c.__qualname__ for c in own)
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in own if not issubclass(c, StormeyeError))
    assert strays == [], f"derive these from stormeye.core.errors.StormeyeError: {strays}"
    for cls in own:
        assert 400 <= cls.http_status <= 599, cls


def test_the_api_answers_a_stormeye_error_with_its_status_and_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from stormeye.api.app import create_app
    from stormeye.workers.settings import Settings

    class Teapot(BadInput):
        http_status = 418

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'e.db'}"), start_ticker=False)
    extra = APIRouter()

    @extra.get("/test/teapot")
    def teapot() -> None:
        raise Teapot("short and stout: pour it out")

    app.include_router(extra)
    with TestClient(app) as c:
        got = c.get("/test/teapot")
        assert got.status_code == 418 and got.json() == {"detail": "short and stout: pour it out"}
        missing = c.get("/api/v1/incidents/inc-nope")
        assert missing.status_code == 404 and missing.json() == {"detail": "no incident 'inc-nope'"}
        gone = c.delete("/api/v1/silences/sil-nope")
        assert gone.status_code == 404 and gone.json() == {"detail": "no silence 'sil-nope'"}
