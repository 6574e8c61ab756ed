"""The query API: JSON over HTTP on the conversation store, under /api/v1 (FastAPI on uvicorn).

settings.py    where to listen, the store, Kafka (for operator actions)
app.py         create_app(): the factory the console mounts into, with auth and store access
auth.py        bearer tokens with roles viewer/operator; the loopback-only open mode
handler.py     the routes
operations.py  operator actions (replay, re-extract) republishing to Kafka, audited
openapi.json   the committed OpenAPI document (`make schemas` writes it; a test checks drift)
"""
