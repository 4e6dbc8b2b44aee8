"""The ASGI app uvicorn serves (``uvicorn bankanom_api.main:app``), configured from the environment."""

from bankanom_api.app import create_app

app = create_app()
