"""`htbase import FILE` against a served htbase with a key: the file's URLs become items, each with an outcome."""

from __future__ import annotations

from infra.keys import ApiKeys
from tests.api.conftest import quiet_service, served
from tests.service.test_client_cli import htbase


def test_a_bookmark_file_is_imported_from_the_command_line(embedded_settings, tmp_path):
    service = quiet_service(embedded_settings)  # captures stay queued: the import's outcomes are the point
    try:
        key = ApiKeys(service.runtime.engine).create("cli", "write")[1]
        bookmarks = tmp_path / "urls.txt"
        bookmarks.write_text("https://cli.example/a\nhttps://cli.example/b\nnot a url\n")
        with served(service.api) as url:
            env = {"HTBASE_URL": url, "HTBASE_API_KEY": key}
            first = htbase("import", str(bookmarks), env=env)
            assert first.returncode == 0, first.stderr
            assert all(part in first.stdout for part in (": 3 URLs", "2 started", "1 invalid")), first.stdout
            again = htbase("import", str(bookmarks), "--wait", env=env)  # nothing new: done at once
            assert again.returncode == 0 and "2 duplicate" in again.stdout, again.stdout + again.stderr
            refused = htbase("import", str(bookmarks), env={"HTBASE_URL": url})
            assert refused.returncode == 2 and "401" in refused.stderr
    finally:
        service.close()
