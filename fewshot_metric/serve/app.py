"""create_app: the FastAPI app that serves one FewShotClassifier over HTTP."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware

from fewshot_metric import __version__
from fewshot_metric.classifier import FewShotClassifier
from fewshot_metric.serve.errors import install_handlers
from fewshot_metric.serve.folding import Owner
from fewshot_metric.serve.metrics import Metrics, MetricsMiddleware
from fewshot_metric.serve.options import ServeOptions
from fewshot_metric.serve.responses import AsciiJSONResponse
from fewshot_metric.serve.routes import STATIC, router
from fewshot_metric.serve.service import Service
from fewshot_metric.serve.thumbnails import Thumbnails
from fewshot_metric.serve.uploads import BodyLimit


def create_app(classifier: FewShotClassifier, options: ServeOptions | None = None, *,
               owner: Owner | None = None, thumbnails: Thumbnails | None = None) -> FastAPI:
    """The app serving `classifier` with `options` (default ServeOptions()). `owner`, a
    `fewshot_metric.store.journal.StoreOwner` of the classifier's store, makes changes durable
    and is folded in the background, then closed when the app stops; without one, changes
    live in memory. `thumbnails` default to memory only. Run it under uvicorn, or in tests
    `with starlette.testclient.TestClient(app)` (the lifespan starts the query batcher)."""
    options = options if options is not None else ServeOptions()
    metrics = Metrics(classes=lambda: len(classifier), shots=lambda: service.shots,
                      pending=lambda: 0 if owner is None else owner.pending)
    service = Service(classifier, options, owner, thumbnails, metrics.batch_images.observe)
    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI and ReDoc from
    # files in the fastapi-offline package, not from a CDN, so they work offline
    app = FastAPIOffline(title="fewshot-metric", version=__version__,
                         description="Register classes from a few images, query the nearest "
                                     "ones.",
                         default_response_class=AsciiJSONResponse,
                         lifespan=lambda app: service.running())
    app.state.service, app.state.metrics = service, metrics
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    install_handlers(app, metrics.count_error)
    # middleware, innermost first: the body limit, CORS (so errors reach browsers), metrics
    app.add_middleware(BodyLimit, max_bytes=options.max_upload_bytes)
    if options.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
