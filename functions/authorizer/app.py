"""API Gateway Lambda authorizer (HTTP API, simple responses, cached by the Authorization header).

It identifies; the API functions enforce. A known key passes its tenant id and scopes on; an unknown one
passes an empty tenant id so the function answers 401 in the API's own JSON envelope (an HTTP API authorizer
cannot choose its status code). API Gateway itself answers 401 when the header is missing altogether.
A full-access key made before the `credentials:proxy` scope existed passes it on too (tenants.effective_scopes).
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import tenants
from grantlink.observability import logger, metrics


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    caller = tenants.authenticate((event.get("headers") or {}).get("authorization"))
    if caller is None:
        logger.info("unknown api key")
        return {"isAuthorized": True, "context": {"tenantId": "", "scopes": "", "keyId": ""}}
    logger.append_keys(tenant_id=caller.tenant_id, key_id=caller.key_id)
    scopes = " ".join(sorted(caller.scopes))
    # keyId is the key's public name (never the key, never its hash): the functions put it in the audit trail.
    return {"isAuthorized": True, "context": {"tenantId": caller.tenant_id, "scopes": scopes, "keyId": caller.key_id}}
