-- Whether each running HTTPS gateway can serve (issue 11): the codes of its failing GET /ready checks
-- (hub/gateway/readiness.py: GATEWAY_READY_BROKER, _EXAMINERS, _CRL …), empty when it is ready. Written with the
-- row's refresh (hub/store/gateway_activity.py); the ops overview's gateway row names a gateway that is up but not
-- ready, and why (the load balancer sends it no clients meanwhile).

ALTER TABLE gateway_instances ADD COLUMN not_ready text[] NOT NULL DEFAULT '{}';
