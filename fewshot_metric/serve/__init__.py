"""`fewshot-metric serve`: a FewShotClassifier over HTTP (FastAPI + uvicorn).

`create_app(classifier, ServeOptions(...), owner=StoreOwner)` builds the app;
`server.serve_store` runs it on a store folder (what the CLI command does). JSON in and out;
images as multipart files (field `images`, many per request) or base64 in JSON; errors as
`{"error": kind, "detail": message}` with the Python API's message (see `errors`).

| route | answer |
| --- | --- |
| GET /health | {"status": "ok"} (never needs a token) |
| GET /info | classes, shots, dim, metric, mode, index, fingerprint, checkpoint, journal, ... |
| GET /metrics | Prometheus text |
| GET /classes?offset&limit | {"total", "offset", "limit", "classes": [{"label", "count"}]} |
| GET /class?label=L, DELETE /class?label=L | {"label", "count"}; {"removed", "classes"} |
| POST /register | label + images -> {"label", "count", "added", "created"}, 201 if created |
| POST /register_many | {label: images} in one step -> {"classes": [as /register]} |
| POST /rename | {"label", "new_label"} -> {"label"} |
| POST /query | images + k -> {"predictions": [Prediction.to_dict() + "label"]} |
| POST /query/embeddings | {"embeddings": [N, D], "k"} -> as /query |
| GET /thumbnail?label=L | image/png |
| GET / | the web page (static/) ; GET /docs: OpenAPI docs |

Modules: `app` (the factory), `routes`, `service` (what routes do), `batcher` (concurrent
queries -> one embed + search), `uploads` (body limit, content types, images), `errors`,
`auth`, `metrics`, `thumbnails`, `folding` (background journal folds), `options`, `server`
(run on a store folder).
"""

from fewshot_metric.serve.app import create_app
from fewshot_metric.serve.options import ServeOptions

__all__ = ["ServeOptions", "create_app"]
