"""Kusanagi's own checks for schemathesis (scripts/check_api_contract.py).

`KUSANAGI_CONTRACT_ROLE` names the role of the key the run sends (`none`:
no key; `invalid`: a key the server does not hold). Each route's document
says the roles it accepts (`x-kusanagi-roles`) and whether it needs a key
at all (`security`).
"""

import json
import os

import schemathesis

ROLE = os.environ.get("KUSANAGI_CONTRACT_ROLE", "none")
UNKEYED = ROLE in ("none", "invalid")


def _operation(case):
    """The route's definition, or None for a method it does not take (the
    `unsupported_method` probes, answered 405 before any key is read)."""
    if case.method.upper() != case.operation.method.upper():
        return None
    return case.operation.definition.raw


def _error_code(response):
    try:
        return json.loads(response.text).get("error")
    except (ValueError, AttributeError):
        return None


@schemathesis.check
def key_required(ctx, response, case):
    """With no valid key, a route that declares security answers 401, never more."""
    op = _operation(case)
    if not UNKEYED or op is None or not op.get("security"):
        return None
    if response.status_code != 401:
        raise AssertionError(
            f"{case.method} {case.formatted_path} answered {response.status_code} without a valid key ({ROLE})"
        )
    return True


@schemathesis.check
def role_boundary(ctx, response, case):
    """A key reaches a route only if its role is one the route accepts."""
    op = _operation(case)
    if UNKEYED or op is None:
        return None
    roles = op.get("x-kusanagi-roles")
    if roles is None:
        return None
    refused = response.status_code == 403 and _error_code(response) == "forbidden"
    if ROLE in roles and refused:
        raise AssertionError(f"{case.method} {case.formatted_path} refused the role {ROLE}, which it accepts")
    if ROLE not in roles and not refused:
        raise AssertionError(
            f"{case.method} {case.formatted_path} answered {response.status_code} to the role {ROLE}, "
            f"which it does not accept (roles: {roles})"
        )
    return True
