"""REST API conventions shared by every service: bearer-token auth with read/write scopes
(:mod:`.auth`), problem-details error bodies (:mod:`.errors`), cursor pagination
(:mod:`.pagination`) and the protected OpenAPI document (:mod:`.openapi`)."""

from qcdr_common.api.auth import (
    ApiAuthSettings,
    ApiTokenConfigError,
    BearerAuthMiddleware,
    Principal,
    ReadPrincipal,
    Scope,
    TokenStore,
    WritePrincipal,
    require_scope,
)
from qcdr_common.api.errors import ApiError, Problem, install_error_handlers
from qcdr_common.api.pagination import Page, PageParams, PageRequest, keyset, split_page

__all__ = [
    "ApiAuthSettings",
    "ApiError",
    "ApiTokenConfigError",
    "BearerAuthMiddleware",
    "Page",
    "PageParams",
    "PageRequest",
    "Principal",
    "Problem",
    "ReadPrincipal",
    "Scope",
    "TokenStore",
    "WritePrincipal",
    "install_error_handlers",
    "keyset",
    "require_scope",
    "split_page",
]
