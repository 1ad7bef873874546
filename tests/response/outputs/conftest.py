"""The response service's database fixtures, shared with the output tests."""

from tests.response.service.conftest import (
    committed_database_url,
    committed_db,
    response_database_url,
    sessions,
)

__all__ = ["committed_database_url", "committed_db", "response_database_url", "sessions"]
